"""``drsvc site recover`` and ``site drill``: a whole site's desktops back from another site's copies.

At the recovery site there is the site's S3 store (``[sites.NAME]``), the key material, an empty
Ceph pool and a container runtime; the primary's catalog, hot and cold stores are gone. Recovery:

1. **A catalog from the site's store.** Every manifest there is read once and put in the catalog
   (``drsvc.rebuild``: desktops with their labels and tenant, points, artifacts), the site's
   store standing in for the cold tier, and each point recorded as held at the site. Rebuilding
   never rewrites rows that exist, so a second ``site recover`` after a partial one resumes.
2. **A plan** (``drsvc.storm.plan_fleet``): each desktop's latest point at the site, in order of
   its policy's ``priority``, then RTO target; ``--tenant`` / ``--policy`` narrow it.
3. **Restores with admission control** (``drsvc.storm.FleetRestore``): in place, under the
   desktop's own container name, with the volume moved to ``sites.NAME.restore_pool`` (same
   namespace); a desktop already running here is skipped (``--force`` restores over it). The run
   is recorded (``site_recoveries``) with the fleet's times and each desktop's.

``site drill`` does the same without touching anything live: the catalog is a scratch one in a
temporary directory (the primary's stays as it is; only the drill's record is written to it), every
desktop is restored as a sandboxed clone (its own name and namespace, no network, data verified
against the manifest, continuity from the checkpoint checked) and torn down right after.

Simulated in the lab: the recovery site's runtime is the same Podman host (``docs/offsite.md``).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drsvc.admission import Limits
from drsvc.catalog import Catalog
from drsvc.errors import DrsvcError, NotFound
from drsvc.intents import Owner, owner_alive
from drsvc.rebuild import rebuild_catalog
from drsvc.restore_effects import resolve_clone
from drsvc.services import Services
from drsvc.sites import relocate_volume, site_section
from drsvc.storm import FleetItem, FleetReport, FleetRestore, plan_fleet, preview_skips, select_desktops

if TYPE_CHECKING:
    from drsvc.chunks import ChunkStore
    from drsvc.crypto import Keys
    from drsvc.policy import PolicySet
    from drsvc.restore import RestoreJob, RestorePlan
    from drsvc.runtimes.base import ContainerRuntime

Event = Callable[..., None]


class SiteServices(Services):
    """The adapters of a recovery at a site: the site's store is the only tier (as ``cold``).

    The primary's hot and cold stores are hidden even when the config names them (a drill runs
    with the primary's config, and must read nothing but the site's copies); keys, policies and
    the runtime are the base services' own.
    """

    def __init__(self, base: Services, site: str, catalog: Catalog) -> None:
        super().__init__(base.config.model_copy(update={"hot": None, "cold": None}), catalog)
        self.base = base
        self.site_name = site

    def _ceph(self, url: str) -> dict[str, Any]:
        """The recovery site's Ceph (``sites.NAME.ceph_conf``) when given, else the base's choice."""
        conf = self.base.config.sites[self.site_name].ceph_conf
        if conf and url.startswith("rados://"):
            return {"conffile": str(conf)}
        return self.base._ceph(url)

    @cached_property
    def policies(self) -> PolicySet:
        return self.base.policies

    @cached_property
    def keys(self) -> Keys:
        return self.base.keys

    @cached_property
    def runtime(self) -> ContainerRuntime:
        return self.base.runtime

    @cached_property
    def cold(self) -> ChunkStore:
        return self.base.site(self.site_name)

    @property
    def has_cold(self) -> bool:
        return True

    def close(self) -> None:
        """The base services own the adapters."""


def catalog_from_site(services: SiteServices, desktop: str | None = None) -> dict[str, Any]:
    """Put every point of the site's store (``desktop``: that desktop's) into ``services.catalog``;
    what was done, for the report."""
    started = time.monotonic()
    report = rebuild_catalog(services, desktop=desktop)
    url = services.cold.store.url
    catalog = services.catalog
    with catalog.transaction():
        catalog.execute(
            "INSERT OR IGNORE INTO point_sites (point_id, site, store_url, added_at) "
            "SELECT point_id, ?, store_url, added_at FROM point_tiers WHERE tier = 'cold' AND store_url = ?",
            [services.site_name, url],
        )
    return {
        "catalog": "rebuilt from the site's manifests",
        "manifests": report.manifests,
        "points_added": len(report.points_added),
        "desktops_added": len(report.desktops_added),
        "problems": report.problems,
        "catalog_seconds": round(time.monotonic() - started, 2),
    }


@contextmanager
def scratch_catalog(under: Path | None = None, site: str = "") -> Iterator[Catalog]:
    """A catalog in a temporary directory, removed afterwards (dry runs and drills).

    ``under`` (``scratch_root``): where a drill keeps it, so that the intents its restores record
    there outlive a kill -9 of the drill: ``drsvc cleanup`` finds them (``abandoned_scratch``).
    """
    if under is not None:
        under.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{site}." if site else "drsvc-site-", dir=under))
    catalog = Catalog.open(directory / "catalog.db")
    try:
        yield catalog
    finally:
        catalog.close()
        shutil.rmtree(directory, ignore_errors=True)


def scratch_root(services: Services) -> Path:
    """Where site drills keep their scratch catalogs: beside the catalog, ``site-drills/SITE.XXXX``."""
    return Path(services.catalog.path).parent / "site-drills"


def abandoned_scratch(services: Services, problems: list[str]) -> Iterator[tuple[str, Catalog, Path]]:
    """The scratch catalogs of site drills that were killed: (site, open catalog, its directory).

    A scratch catalog is live while an owner lease in it is (its drill holds one throughout); one
    without a catalog file is skipped for a minute (its drill may be creating it). The caller
    closes each catalog; what cannot be opened is named in ``problems`` and left.
    """
    root = scratch_root(services)
    if not root.is_dir():
        return
    for directory in sorted(root.iterdir()):
        site = directory.name.partition(".")[0]
        if not (directory / "catalog.db").exists():
            if time.time() - directory.stat().st_mtime > 60:
                shutil.rmtree(directory, ignore_errors=True)
            continue
        try:
            catalog = Catalog.open(directory / "catalog.db")
        except DrsvcError as e:
            problems.append(f"site drill scratch catalog {directory}: {e}")
            continue
        owners = catalog.query("SELECT name FROM leases WHERE name LIKE 'owner:%'")
        if any(owner_alive(catalog, r["name"]) for r in owners):
            catalog.close()
            continue
        if site not in services.config.sites:
            catalog.close()
            problems.append(f"site drill scratch catalog {directory}: no [sites.{site}] in the config any more")
            continue
        yield site, catalog, directory


@dataclass
class SiteRestore:
    """``restore DESKTOP --site NAME``: its job, and what was read from the site's manifests first."""

    job: RestoreJob
    imported: dict[str, Any] | None = None  # None: the catalog here knew the desktop


def site_restore_job(
    services: Services,
    site: str,
    desktop: str,
    stack: ExitStack,
    *,
    dry_run: bool = False,
    on_event: Event | None = None,
) -> SiteRestore:
    """One desktop back from ``site``'s copies (``restore DESKTOP --site NAME``), as a recovery restores it.

    At the recovery site: a desktop ``site recover`` could not bring back, one wanted from an older
    point, or one wanted before the rest (before any ``site recover``). The site's store stands in
    for the cold tier and the volume goes to the site's ``restore_pool``. A desktop this catalog
    does not know yet is read from the site's manifests first, exactly as ``site recover`` would
    record it (its points only; a dry run into a scratch catalog, closed with ``stack``); one the
    site does not hold either is not found.
    """
    from drsvc.restore import RestoreJob

    recovery = SiteRecovery(services, site)  # unknown site: exit 3 before anything
    store = services.site(site)  # unreachable, empty or wrong key: one clear error first
    catalog, imported = services.catalog, None
    if not services.catalog.query("SELECT 1 FROM desktops WHERE id = ?", [desktop]):
        if next(iter(store.list_manifests(desktop)), None) is None:
            raise NotFound(
                f"unknown desktop {desktop!r}: neither the catalog here nor site {site}'s copies know it",
                hint=f"`drsvc site recover --from {site} --dry-run` lists the desktops site {site} holds",
            )
        if dry_run:  # a dry run records nothing: the plan reads a scratch catalog
            catalog = stack.enter_context(scratch_catalog())
        imported = catalog_from_site(SiteServices(services, site, catalog), desktop=desktop)
    site_services = SiteServices(services, site, catalog)
    if on_event is None:
        return SiteRestore(RestoreJob(site_services, relocate=recovery.relocate), imported)
    return SiteRestore(RestoreJob(site_services, on_event=on_event, relocate=recovery.relocate), imported)


class SiteRecovery:
    """Recovers (or drills) a site's desktops from its copies."""

    def __init__(self, services: Services, site: str, *, on_event: Event | None = None) -> None:
        self.services = services
        self.site = site
        self.section = site_section(services.config, site)  # unknown site: exit 3 before anything
        self.on_event = on_event

    def relocate(self, url: str) -> str:
        """A volume goes to this site's pool, in the same namespace (a clone's is its own name)."""
        return relocate_volume(url, self.section.restore_pool)

    def _plan(self, site_services: SiteServices, tenant: str | None, policy: str | None) -> tuple[list[FleetItem], str]:
        desktops = select_desktops(
            site_services.catalog, site_services.policies, everything=True, tenant=tenant, policy=policy
        )
        selection = " ".join(f"--{k} {v}" for k, v in (("tenant", tenant), ("policy", policy)) if v) or "--all"
        return plan_fleet(site_services, desktops), selection

    def recover(
        self,
        *,
        tenant: str | None = None,
        policy: str | None = None,
        parallel: int = 4,
        limits: Limits | None = None,
        force: bool = False,
        dry_run: bool = False,
    ) -> FleetReport:
        """Rebuild the catalog from the site, then restore every selected desktop here."""
        started = time.monotonic()
        self.services.site(self.site)  # unreachable, empty or wrong key: one clear error first
        report = FleetReport("recover", self.site, parallel=parallel, dry_run=dry_run)
        report.admission = limits.document() if limits else {}
        if dry_run:
            with scratch_catalog() as catalog:
                site_services = SiteServices(self.services, self.site, catalog)
                report.prepare = catalog_from_site(site_services)
                report.items, report.selection = self._plan(site_services, tenant, policy)
                if not force:  # what the run would skip: desktops already running here
                    chosen = select_desktops(
                        catalog, site_services.policies, everything=True, tenant=tenant, policy=policy
                    )
                    preview_skips(site_services, report.items, chosen)
            return report
        site_services = SiteServices(self.services, self.site, self.services.catalog)
        report.prepare = catalog_from_site(site_services)
        items, selection = self._plan(site_services, tenant, policy)
        job = FleetRestore(
            site_services,
            self.services.catalog,
            kind="recover",
            site=self.site,
            parallel=parallel,
            limits=limits,
            force=force,
            relocate=self.relocate,
            on_event=self.on_event,
        )
        return job.run(items, selection=selection, started=started, report=report)

    def drill(
        self,
        *,
        tenant: str | None = None,
        policy: str | None = None,
        parallel: int = 4,
        limits: Limits | None = None,
        dry_run: bool = False,
    ) -> FleetReport:
        """The same as ``recover`` on sandboxed clones; nothing live is touched, the clones are removed."""
        started = time.monotonic()
        self.services.site(self.site)
        report = FleetReport("drill", self.site, parallel=parallel, dry_run=dry_run)
        report.admission = limits.document() if limits else {}
        token = secrets.token_hex(3)
        # its own owner lease in the scratch catalog: cleanup leaves a live drill's scratch alone
        with scratch_catalog(scratch_root(self.services), self.site) as catalog, Owner(catalog):
            site_services = SiteServices(self.services, self.site, catalog)
            report.prepare = catalog_from_site(site_services)
            report.prepare["catalog"] = "rebuilt from the site's manifests into a scratch catalog"
            report.items, report.selection = self._plan(site_services, tenant, policy)
            if dry_run:
                return report
            job = FleetRestore(
                site_services,
                self.services.catalog,
                kind="drill",
                site=self.site,
                parallel=parallel,
                limits=limits,
                network="none",
                verify=True,
                clone_name=lambda item: f"sitedrill-{token}-{item.desktop}",
                relocate=self.relocate,
                finish=lambda item, plan: self._teardown(site_services, item, plan),
                on_event=self.on_event,
            )
            return job.run(report.items, selection=report.selection, started=started, report=report)

    @staticmethod
    def _teardown(services: Services, item: FleetItem, plan: RestorePlan) -> None:
        """A drill desktop passes only verified and continued from its checkpoint; its clone always goes.

        Of the namespace, only the clone's objects: the point's names once its restore finished (a
        failed restore removed what it wrote itself); an object someone else wrote there stays."""
        ran = item.up  # before the verdict below: whether the restore finished, not whether it passed
        if item.up and not ("data" in item.checks and item.checks.get("restored_from_checkpoint") is True):
            item.status = "failed"
            item.error = "not verified: no checkpoint restored or data not checked"
        if not plan.as_name:
            return  # never a live desktop
        wrote = [o["name"] for o in plan.manifest["volume"]["objects"]] if ran else []
        errors = []
        for step in (
            lambda: services.runtime.remove(plan.name),
            lambda: services.volume(plan.volume_url).remove_objects(wrote) if wrote else 0,
        ):
            try:
                step()
            except DrsvcError as e:
                errors.append(str(e))
        if errors:  # the clone's intents stay pending: cleanup retries what is left
            raise DrsvcError("; ".join(errors))
        resolve_clone(services.catalog, plan.name, plan.volume_url)  # torn down: its intents are done with
