"""drsvc backup DESKTOP... | --policy NAME: take recovery points now."""

from __future__ import annotations

import concurrent.futures as cf
from typing import TYPE_CHECKING, Any

import click

from drsvc.cli._common import App, DrsvcCommand, pass_app, shown
from drsvc.errors import InvalidInput
from drsvc.inventory import select
from drsvc.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console

    from drsvc.backup import BackupReport, Outcome
    from drsvc.chunks import ChunkStore
    from drsvc.services import Services


def opening_hot(services: Services) -> cf.Future[ChunkStore]:
    """Open the hot store (a RADOS connection: mostly waiting on the cluster) on a thread of its own,
    while this thread loads the backup job's modules; ``result()`` before anything else uses it."""
    import drsvc.chunks
    import drsvc.storage  # noqa: F401  (both threads need these: imported here, not on both at once)

    pool = cf.ThreadPoolExecutor(1, thread_name_prefix="open-hot")
    future = pool.submit(lambda: services.hot)
    pool.shutdown(wait=False)  # its one thread ends with the call
    return future


def progress_printer(app: App) -> Any:
    """Job events as short lines on stderr (stdout stays clean for --json)."""
    err = app.err

    def on_event(kind: str, **fields: Any) -> None:
        if kind == "freeze":
            err.print(f"[dim]freezing {len(fields['desktops'])} desktop(s) for one pool snapshot…[/]")
        elif kind == "snapshot":
            err.print(f"[dim]pool snapshot {fields['name']}[/]")
        elif kind == "cleanup":
            r = fields["report"]
            err.print(
                f"[dim]cleaned up after interrupted runs: {len(r.failed_points)} point(s) failed, "
                f"{len(r.snapshots)} pool snapshot(s), {len(r.undone)} other leftover(s) removed[/]"
            )
            for line in r.problems:
                err.print(f"[yellow]left behind[/] {shown(line)}")
        elif kind == "cleanup-failed":
            err.print(f"[yellow]cleanup of interrupted runs failed (retried next run): {shown(fields['error'])}[/]")
        elif kind == "restore-interrupted":
            i = fields["intent"]
            err.print(f"[red]in-place restore of {i.target} was interrupted[/]: run `drsvc restore {i.target}` again")
        elif kind == "desktop":
            o: Outcome = fields["outcome"]
            mark = "[green]✓[/]" if o.status == "complete" else "[red]✗[/]"
            err.print(
                f"{mark} {o.desktop} {o.status} ({o.consistency}) in {o.seconds:.1f}s"
                + (f": {shown(o.error or o.reason)}" if (o.error or o.reason) else "")
            )

    return on_event


def render_report(report: BackupReport, out: Console) -> None:
    from rich.table import Table  # the table only without --json

    table = Table(box=None, pad_edge=False)
    for col in ("DESKTOP", "POINT", "STATUS", "CONSISTENCY", "FREEZE", "SIZE", "NEW", "NOTE"):
        table.add_column(col)
    for o in report.outcomes:
        table.add_row(
            o.desktop,
            o.point_id,
            o.status,
            o.consistency,
            f"{o.freeze_ms:.0f} ms" if o.freeze_ms is not None else "-",
            format_bytes(o.bytes),
            format_bytes(o.new_bytes),
            shown(o.error or o.reason or ""),
        )
    out.print(table)
    s = report.document()["summary"]
    out.print(
        f"{s['complete']}/{s['count']} complete ({s['paired']} paired), "
        f"{format_bytes(s['new_bytes'])} new in the hot store; pool snapshot(s): "
        + (", ".join(report.pool_snapshots) or "-")
    )


def _reporting(on_event: Any, writer: Any) -> Any:
    """Also rewrite the node agent's result document each time a desktop finishes."""

    def both(kind: str, **fields: Any) -> None:
        on_event(kind, **fields)
        if kind == "desktop":
            writer.progress()

    return both


@click.command("backup", cls=DrsvcCommand)
@click.argument("desktops", nargs=-1)
@click.option("--policy", "policy_name", help="Back up every desktop this policy covers.")
@click.option("--node", help="Only desktops running on this node (the Kubernetes executor's node agents).")
@click.option("--lease-token", type=int, help="Work under the scheduler's lease with this fencing token.")
@click.option(
    "--run",
    "run_id",
    help="Run as a node agent of this scheduler run: private catalog, result to the hot store "
    "(with --node, --lease-token).",
)
@click.option("--dry-run", is_flag=True, help="Show which desktops would be backed up, change nothing.")
@pass_app
def command(
    app: App,
    desktops: tuple[str, ...],
    policy_name: str | None,
    node: str | None,
    lease_token: int | None,
    run_id: str | None,
    dry_run: bool,
) -> int:
    """Take recovery points now: memory (CRIU checkpoint) and data (pool snapshot) paired.

    Name DESKTOPs, or give --policy to take all desktops it covers (with its capture options).
    A desktop whose checkpoint fails still gets a crash-consistent point, with the reason.
    """
    if bool(desktops) == bool(policy_name):
        raise InvalidInput("name DESKTOPs or give --policy NAME (not both)")
    if run_id is not None:
        if node is None or lease_token is None:
            raise InvalidInput("--run (a node agent) needs --node and --lease-token")
        app.use_private_catalog()  # agents never write the shared catalog (drsvc.agents)
    services = app.services
    policy = services.policies.get(policy_name) if policy_name else None
    chosen = select(services, names=list(desktops), policy=policy_name)
    if node is not None:
        chosen = [d for d in chosen if d.node == node]
    if dry_run:
        names = [d.desktop_id for d in chosen]
        doc = {"dry_run": True, "policy": policy_name, "desktops": names}
        app.emit(doc, lambda out: out.print("would back up: " + (", ".join(names) or "nothing")))
        return 0
    # the job's modules load while the hot store connects (nothing to back up, nothing to open)
    hot = opening_hot(services) if chosen or run_id is not None else None
    from drsvc.backup import BackupJob
    from drsvc.cleanup import clean_before

    writer = None
    on_event = app.progress(progress_printer(app))
    if hot is not None:
        hot.result()  # its error, if any, before the lease: the job itself opens it before anything
    if run_id is not None:
        from drsvc.agents import ResultWriter

        assert node is not None
        writer = ResultWriter(services.hot, app.catalog, run=run_id, node=node)
        on_event = _reporting(on_event, writer)
    if not chosen:
        if writer is not None:
            writer.final()  # the scheduler waits for a report from every node it sent work to
        app.emit({"policy": policy_name, "results": []}, lambda out: out.print("no desktops to back up"))
        return 0
    lease = services.joined_lease(lease_token) if lease_token is not None else app.lease()
    with lease:
        try:
            if not lease.joined:
                clean_before(services, lease, on_event)  # what killed runs left behind
            report = BackupJob(services, lease, on_event=on_event).run(chosen, policy)
        finally:
            if writer is not None:
                writer.final()
    app.emit(report.document(), lambda out: render_report(report, out))
    return report.exit_code
