"""The command line: one module per command, each thin (parse, call one job, render, exit code).

Every command module exposes one click command or group as ``command``. ``COMMANDS`` is the
registry: command name -> (module, one-line help). The ``drsvc`` group imports a command's module
only when that command runs, so ``drsvc --help`` and a cron minute's ``drsvc run --once`` do not
pay for every job's imports; the help line is kept here for ``drsvc --help`` to list commands
without importing them (``tests/unit/test_cli_lazy.py`` keeps it equal to the command's own).
"""

from __future__ import annotations

import importlib

import click

COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("init_cmd", "Write a commented starter config wired to what this machine has, plus key and catalog."),
    "policy": ("policy_cmd", "Validate policy files and preview what a policy does."),
    "desktops": ("desktops_cmd", "Desktops: containers labelled drsvc.desktop, and their data volumes."),
    "status": (
        "status_cmd",
        "Show objectives per policy and desktop: last point vs RPO, failures, next run, tier lag, drills.",
    ),
    "metrics": (
        "metrics_cmd",
        "Print the Prometheus metrics (text exposition format), or write them for node_exporter.",
    ),
    "run": ("run_cmd", "Run the scheduler: due backups, tiering to S3, drills, then retention on every tier."),
    "backup": ("backup_cmd", "Take recovery points now: memory (CRIU checkpoint) and data (pool snapshot) paired."),
    "restore": ("restore_cmd", "Bring DESKTOP back from a recovery point and report the RTO, phase by phase."),
    "drill": ("drill_cmd", "Restore desktops as sandboxed clones, verify data and process continuity, measure RTO."),
    "points": ("points_cmd", "Recovery points: what can be restored, from which tier."),
    "dump": ("dump_cmd", "Write OBJECT of recovery point POINT to stdout, as it was at the point."),
    "mount": (
        "mount_cmd",
        "Mount a recovery point (or every point of DESKTOP, as dated directories) read-only at DIRECTORY.",
    ),
    "prune": (
        "prune_cmd",
        "Apply each policy's retention on every tier; drop pool snapshots and chunks nothing needs.",
    ),
    "cleanup": (
        "cleanup_cmd",
        "Remove what interrupted runs left: pool snapshots, clones, uploads; report interrupted restores.",
    ),
    "tier": ("tier_cmd", "Copy points older than their policy's tiering.after to the cold tier (S3)."),
    "copy": ("copy_cmd", "Copy due points from the cold tier to other sites, as they are (never decrypted)."),
    "site": ("site_cmd", "Other sites ([sites.NAME]): what they hold, recovering a whole site from one, drilling it."),
    "verify": ("verify_cmd", "Check that points' manifests authenticate and their chunks exist (hot and cold copies)."),
    "catalog": (
        "catalog_cmd",
        "The SQLite catalog: check, export, restore from its copy, rebuild from the stores, adopt a new store.",
    ),
    "keys": ("keys_cmd", "Data keys: one per tenant, wrapped by the key file's key and stored in the stores."),
    "report": ("report_cmd", "Write the quarterly DR drill report an auditor reads."),
    "runbook": (
        "runbook_cmd",
        "Incident runbooks: what to do when a desktop, node, pool, S3, the catalog or a host is lost.",
    ),
}


def load(name: str) -> click.Command:
    """The click command called ``name`` (importing its module now)."""
    module, _ = COMMANDS[name]
    command: click.Command = importlib.import_module(f"drsvc.cli.{module}").command
    return command


def commands() -> list[click.Command]:
    """Every command, imported (for tests and tools that walk the whole tree)."""
    return [load(name) for name in COMMANDS]
