"""drsvc metrics [--textfile PATH]: the Prometheus metrics, for node_exporter's textfile collector."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from drsvc.cli._common import App, DrsvcCommand, pass_app
from drsvc.errors import InvalidInput


@click.command("metrics", cls=DrsvcCommand)
@click.option(
    "--textfile",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the metrics to this file (atomically) instead of stdout, e.g. "
    "/var/lib/prometheus/node-exporter/drsvc.prom.",
)
@pass_app
def command(app: App, textfile: Path | None) -> int:
    """Print the Prometheus metrics (text exposition format), or write them for node_exporter.

    The same metrics `drsvc run --metrics-listen` serves, read from the catalog: for cron users,
    run it after `drsvc run --once` and point node_exporter's --collector.textfile.directory at
    the file's directory. Tier lag is what the last tier run (`run`, `tier`) recorded; only a
    catalog no tier run ever recorded in has it planned here (seconds at fleet scale). --json does
    not apply (the format is Prometheus').
    """
    from drsvc import metrics

    if app.json_output:
        raise InvalidInput("drsvc metrics prints the Prometheus text format; --json does not apply")
    _ = app.catalog  # migrate (and fail clearly) before the collector opens its own connection
    registry = metrics.registry(app.config.catalog.path, lambda: app.services.policies)
    if textfile is None:
        sys.stdout.write(metrics.render(registry).decode())
        return 0
    if not textfile.parent.is_dir():
        raise InvalidInput(f"--textfile {textfile}: directory {textfile.parent} does not exist")
    metrics.write_textfile(registry, textfile)
    return 0
