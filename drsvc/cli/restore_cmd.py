"""drsvc restore DESKTOP: bring a desktop back from a recovery point and report its RTO."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from drsvc.cli._common import App, DrsvcCommand, pass_app, shown
from drsvc.cli.jsonlines import JsonConsole
from drsvc.cli.restore_objects import restore_objects
from drsvc.errors import InvalidInput, NotFound
from drsvc.restore import PHASES, RestoreJob, RestorePlan, RestoreResult, parse_time
from drsvc.units import format_bytes


def phase_printer(app: App) -> Any:
    err = app.err

    def on_event(kind: str, **f: Any) -> None:
        if kind == "phase" and f["state"] == "done":
            if isinstance(err, JsonConsole):  # --log-format json: the phase and its time as fields
                line = f"{f['phase']} {f['seconds']:.2f} s"
                err.event("info", "restore.phase", line, phase=f["phase"], seconds=round(f["seconds"], 3))
            else:
                err.print(f"[dim]  {f['phase']:<9} {f['seconds']:6.2f} s[/]")
        elif kind == "teardown":
            err.print(f"[yellow]{shown(f['message'])}[/]" if f["left"] else shown(f["message"]))

    return on_event


def render_plan(plan: RestorePlan, out: Console) -> None:
    doc = plan.document()
    out.print(
        f"restore {doc['desktop']} from point {doc['point_id']} ({doc['taken_at'][:19]}Z, "
        f"{doc['consistency']}, {format_bytes(doc['bytes'])}) on the {doc['tier']} tier"
    )
    where = f"as clone {doc['as']} (volume {doc['volume']})" if doc["as"] else f"in place (volume {doc['volume']})"
    out.print(f"  {where}; existing container: {doc['existing_container'] or 'none'}")
    if doc["resumes"] is not None:
        out.print(f"  [yellow]resumes the interrupted in-place restore {doc['resumes']} (same point)[/]")
    if doc["target"]["foreign_owner"]:
        t = doc["target"]
        out.print(
            f"  [yellow]replaces {t['foreign_owner']} (tenant {t['foreign_tenant'] or 'none'}): "
            f"allowed by {t['allowed_by']}[/]"
        )
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in doc["predicted_phases"].items())
    out.print(f"  predicted RTO {doc['predicted_rto_seconds']:.1f} s (target {doc['target_seconds']:.0f} s): {phases}")


def render_result(result: RestoreResult, out: Console) -> None:
    doc = result.document()
    out.print(f"RTO of {doc['desktop']} ({doc['tier']} tier, point {doc['point_id']})")
    table = Table(box=None)
    table.add_column("PHASE")
    table.add_column("SECONDS", justify="right")
    for phase in PHASES:
        if phase in doc["phases"]:
            table.add_row(phase, f"{doc['phases'][phase]:.2f}")
    table.add_row("[bold]RTO[/]", f"[bold]{doc['rto_seconds']:.2f}[/]")
    out.print(table)
    verdict = "[green]within[/]" if doc["status"] == "ok" else "[red]MISSED[/]"
    out.print(f"RTO {doc['rto_seconds']:.2f} s {verdict} the {doc['target_seconds']:.0f} s target")
    for check, value in doc["checks"].items():
        if isinstance(value, dict):  # timings of a phase's parts: "writes_s 0.34, unmark_s 0.07"
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        out.print(f"  {check}: {value}", markup=False, highlight=False)


@click.command("restore", cls=DrsvcCommand)
@click.argument("desktop", required=False)
@click.option("--at", "at", help="Latest point taken at or before this time (ISO-8601, e.g. 2026-11-27T02:00Z).")
@click.option("--point", "point_id", help="Restore this recovery point (an unambiguous id prefix is enough).")
@click.option("--as", "as_name", help="Restore as a clone with this name, beside the original.")
@click.option("--tier", type=click.Choice(["hot", "cold"]), help="Force a tier (default: the fastest holding it).")
@click.option(
    "--site",
    help="Read the copies at this site ([sites.NAME]) and put the volume in its restore_pool: one desktop at "
    "the recovery site, before or after `site recover` (a desktop the catalog here does not know yet is read "
    "from the site's manifests first).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and the predicted RTO; touch nothing.")
@click.option("--force", is_flag=True, help="Overwrite the desktop even though it is running.")
@click.option("--verify", is_flag=True, help="Also hash the restored volume against the manifest.")
@click.option(
    "--network",
    metavar="none|keep|NAME",
    help="The restored container's network: none (isolated, the default for --as), keep (the checkpoint's, "
    "the default in place; never the host's for a clone) or a runtime network name.",
)
@click.option(
    "--allow-cross-tenant",
    is_flag=True,
    help="Allow replacing a target another desktop owns (usually another tenant's); recorded with who and when.",
)
@click.option(
    "--object",
    "objects",
    multiple=True,
    metavar="NAME",
    help="Restore only this object of the volume (repeatable), into the running desktop's namespace.",
)
@click.option("--prefix", help="Restore only the objects whose name starts with this, into the running desktop.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="With --object/--prefix: replace current objects (default: keep them as NAME.drsvc-POINT).",
)
@click.option(
    "--to-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="With --object/--prefix: write the objects as files beneath this directory instead.",
)
@click.option(
    "--from",
    "copy",
    type=click.Choice(["snapshot", "hot", "cold"]),
    help="With --object/--prefix: read from this copy (pool snapshot, hot or cold chunks; default: the fastest).",
)
@click.option(
    "--tenant",
    help="With --object/--prefix: act for this tenant only (others refused, recorded). Alone: a storm of its desktops.",
)
@click.option("--all", "everything", is_flag=True, help="A storm: every desktop, in priority order.")
@click.option("--node", help="A storm: every desktop of this node.")
@click.option("--pool", help="A storm: every desktop whose volume is in this Ceph pool.")
@click.option("--policy", help="A storm: every desktop this policy covers (alone, or narrowing the others).")
@click.option("--parallel", type=click.IntRange(min=1), help="Storm: desktops in flight (default [recovery] parallel).")
@click.option("--no-admission", is_flag=True, help="Storm: no bounds per shared resource (for comparison).")
@pass_app
def command(
    app: App,
    desktop: str | None,
    at: str | None,
    point_id: str | None,
    as_name: str | None,
    tier: str | None,
    site: str | None,
    dry_run: bool,
    force: bool,
    verify: bool,
    network: str | None,
    allow_cross_tenant: bool,
    objects: tuple[str, ...],
    prefix: str | None,
    overwrite: bool,
    to_dir: Path | None,
    copy: str | None,
    tenant: str | None,
    everything: bool,
    node: str | None,
    pool: str | None,
    policy: str | None,
    parallel: int | None,
    no_admission: bool,
) -> int:
    """Bring DESKTOP back from a recovery point and report the RTO, phase by phase.

    Picks the latest complete point (or the latest at or before --at, or --point), restores the
    volume to exactly the snapshot's content and the container from its checkpoint (its processes
    continue where they were), checks health, and compares the RTO with the policy's target
    (30 s by default): exit 5 when the target is missed. A running desktop is only overwritten
    with --force. --at a time in the future is refused (exit 2).

    An in-place restore that was interrupted (the process killed) is listed by `points list`
    and `cleanup`; the same command resumes it from the same point. A clone of a failed restore
    is removed again; one a killed restore left is removed by `cleanup` (or by this command
    when asked for the same --as name again).

    A restore writes only into the desktop's own container and namespace, or (--as) a clone name
    that no desktop uses and whose namespace is empty; everything is checked before the first
    phase (exit 2, nothing touched). Another desktop's target needs --allow-cross-tenant. A clone
    gets no network (--network keep or NAME gives it one) and none of the original's volumes.

    With --object NAME (repeatable) or --prefix P only those objects come back, with their xattrs
    and omap, into the desktop's own namespace while it keeps running; nothing else is touched.
    A current object is kept as NAME.drsvc-POINT unless --overwrite; --to-dir DIR writes files
    instead. Data comes from the fastest copy: the pool snapshot, hot chunks, cold chunks.

    A restore storm (--all, --node N, --tenant T, --pool P, --policy P) restores many desktops in place, each
    from its latest point, in priority order (the policy's priority, then RTO target), --parallel
    at once with admission control (downloads, Ceph writes, CRIU restores per host bounded by
    [recovery]), and prints the fleet table: time to first, 50 %, 95 % and all up, each desktop's
    RTO. Exit 6 when some desktops failed, 5 when all are up but some over their target.

    At a recovery site (runbook site-lost), --site NAME restores one desktop from that site's
    copies: the most important one before `site recover`, or one from an older point when `site
    recover` could not bring back its latest one.
    """
    if desktop is None and (everything or node or tenant or pool or policy):
        if at or point_id or as_name or objects or prefix is not None or overwrite or to_dir or copy or site:
            raise InvalidInput(
                "a storm (--all, --node, --tenant, --pool) takes no --at, --point, --as, --object, --prefix, "
                "--overwrite, --to-dir, --from or --site (a whole site: drsvc site recover --from SITE)"
            )
        from drsvc.cli._storm import Selection, run_storm

        selection = Selection(everything, node, tenant, pool, policy)
        return run_storm(app, selection, parallel, no_admission, tier, dry_run, force, verify)
    if desktop is None:
        raise InvalidInput("name a DESKTOP, or give --all, --node N, --tenant T, --pool P or --policy P for a storm")
    if everything or node or pool or policy or parallel is not None or no_admission:
        raise InvalidInput(
            "--all, --node, --pool, --policy, --parallel and --no-admission make a storm: they take no DESKTOP"
        )
    if at and point_id:
        raise InvalidInput("give --at or --point, not both")
    if objects or prefix is not None:
        refused = {
            "--as": as_name,
            "--force": force,
            "--verify": verify,
            "--network": network,
            "--allow-cross-tenant": allow_cross_tenant,
            "--site": site,
        }
        return restore_objects(
            app,
            desktop,
            objects=objects,
            prefix=prefix,
            at=at,
            point_id=point_id,
            tier=tier,
            copy=copy,
            overwrite=overwrite,
            to_dir=to_dir,
            tenant=tenant,
            dry_run=dry_run,
            refused=refused,
        )
    if overwrite or to_dir or tenant or copy:
        raise InvalidInput("--overwrite, --to-dir, --from and --tenant go with --object or --prefix")
    with contextlib.ExitStack() as stack:
        if site is None:
            job = RestoreJob(app.services, on_event=app.progress(phase_printer(app)))
        else:
            if tier == "hot":
                raise InvalidInput(
                    "--site reads that site's copies (its store stands in for the cold tier): no --tier hot"
                )
            job = _site_job(app, site, desktop, stack, dry_run)
            tier = "cold"
        return _restore_one(
            app,
            job,
            desktop,
            at,
            point_id,
            as_name,
            tier,
            allow_cross_tenant,
            dry_run,
            force=force,
            verify=verify,
            network=network,
        )


def _site_job(app: App, site: str, desktop: str, stack: contextlib.ExitStack, dry_run: bool) -> RestoreJob:
    """The job of ``restore DESKTOP --site NAME``; says so when the desktop was read from the site first."""
    from drsvc.offsite.recover import site_restore_job

    found = site_restore_job(
        app.services, site, desktop, stack, dry_run=dry_run, on_event=app.progress(phase_printer(app))
    )
    if found.imported is not None:
        where = "a scratch catalog (dry run)" if dry_run else "the catalog here"
        app.err.print(
            f"the catalog here did not know {shown(desktop)}: read its {found.imported['points_added']} point(s) "
            f"from site {shown(site)}'s manifests into {where}"
        )
    return found.job


def _restore_one(
    app: App,
    job: RestoreJob,
    desktop: str,
    at: str | None,
    point_id: str | None,
    as_name: str | None,
    tier: str | None,
    allow_cross_tenant: bool,
    dry_run: bool,
    *,
    force: bool,
    verify: bool,
    network: str | None,
) -> int:
    try:
        plan = job.plan(
            desktop,
            at=parse_time(at) if at else None,
            point_id=point_id,
            as_name=as_name,
            tier=tier,
            allow_cross_tenant=allow_cross_tenant,
            clear_leftovers=not dry_run,  # a dry run touches nothing, not even a killed restore's clone
        )
    except NotFound as e:
        sites = sorted(app.config.sites)
        if (
            sites
            and e.hint is None
            and e.message.startswith("unknown desktop")
            and not app.catalog.query("SELECT 1 FROM desktops WHERE id = ?", [desktop])
        ):
            # at a recovery site the catalog starts empty: the site's copies may know it
            e.hint = f"at a recovery site, `drsvc restore {desktop} --site {sites[0]}` reads that site's copies"
        raise
    if dry_run:
        app.emit({**plan.document(), "dry_run": True}, lambda out: render_plan(plan, out))
        return 0
    if plan.resumes is not None:
        app.err.print(f"resuming the interrupted in-place restore {plan.resumes} of {desktop} (same point)")
    app.err.print(f"restoring {desktop} from {plan.point['id']} ({plan.tier} tier)…")
    result = job.run(plan, force=force, verify=verify, network=network)
    app.emit(result.document(), lambda out: render_result(result, out))
    return result.exit_code
