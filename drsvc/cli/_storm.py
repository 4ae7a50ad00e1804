"""``drsvc restore --all | --node N | --tenant T``: a restore storm at the primary site."""

from __future__ import annotations

from dataclasses import dataclass

from drsvc.cli import _fleet
from drsvc.cli._common import App
from drsvc.storm import FleetReport, FleetRestore, plan_fleet, preview_skips, select_desktops


@dataclass(frozen=True)
class Selection:
    """Which desktops a storm restores (the options given)."""

    everything: bool
    node: str | None
    tenant: str | None
    pool: str | None
    policy: str | None = None

    def describe(self) -> str:
        if self.everything:
            return "--all"
        given = (("node", self.node), ("tenant", self.tenant), ("pool", self.pool), ("policy", self.policy))
        return " ".join(f"--{k} {v}" for k, v in given if v)


def run_storm(
    app: App,
    which: Selection,
    parallel: int | None,
    no_admission: bool,
    tier: str | None,
    dry_run: bool,
    force: bool,
    verify: bool,
) -> int:
    """Plan the storm (order, points); with ``dry_run`` print it, else restore and print the fleet table."""
    services = app.services
    desktops = select_desktops(
        services.catalog,
        services.policies,
        everything=which.everything,
        node=which.node,
        tenant=which.tenant,
        pool=which.pool,
        policy=which.policy,
    )
    items = plan_fleet(services, desktops, tier)
    selection = which.describe()
    parallel = parallel or app.config.recovery.parallel
    limits = _fleet.limits_of(app, no_admission)
    if dry_run:
        if not force:
            preview_skips(services, items, desktops)
        report = FleetReport("storm", selection=selection, parallel=parallel, items=items, dry_run=True)
        report.admission = limits.document() if limits else {}
        app.emit(report.document(), lambda out: _fleet.render(report, out))
        return report.exit_code
    app.err.print(f"restoring {len(items)} desktop(s), {parallel} in flight…")
    job = FleetRestore(
        services,
        services.catalog,
        kind="storm",
        parallel=parallel,
        limits=limits,
        force=force,
        verify=verify,
        on_event=_fleet.progress_printer(app, len(items)),
    )
    report = job.run(items, selection=selection)
    app.emit(report.document(), lambda out: _fleet.render(report, out))
    return report.exit_code
