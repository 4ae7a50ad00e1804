"""Inventory: which desktops exist (runtime labels), recorded in the catalog, and their policies."""

from __future__ import annotations

from typing import Any

from drsvc.errors import NotFound
from drsvc.runtimes.base import LABEL_CLONE_OF, DesktopRef
from drsvc.services import Services


def discover(services: Services) -> tuple[list[DesktopRef], list[str]]:
    """Ask the runtime for every labelled desktop, record them; returns (found, gone ids)."""
    runtime = services.runtime
    # Clones restored beside their desktop (restore --as, drill sandboxes) are not desktops to
    # protect: they carry drsvc.clone-of, and a policy selecting by tenant must not back them up.
    found = [d for d in runtime.list_desktops() if LABEL_CLONE_OF not in d.labels]
    catalog = services.catalog
    with catalog.transaction():
        for d in found:
            catalog.upsert_desktop(
                {
                    "id": d.desktop_id,
                    "runtime_url": runtime.url,
                    "container": d.container,
                    "volume": d.volume,
                    "tenant": d.tenant,
                    "labels": d.labels,
                    "image": d.image,
                    "node": d.node,
                }
            )
        gone = catalog.mark_gone({d.desktop_id for d in found}, runtime.url)
    return found, gone


def policies_of(services: Services, desktop: DesktopRef | dict[str, Any]) -> list[str]:
    if isinstance(desktop, DesktopRef):
        ident, tenant, labels = desktop.desktop_id, desktop.tenant, desktop.labels
    else:
        ident, tenant, labels = desktop["id"], desktop["tenant"], desktop["labels"]
    return [p.name for p in services.policies.for_desktop(ident, tenant, labels)]


def select(services: Services, *, names: list[str] | None = None, policy: str | None = None) -> list[DesktopRef]:
    """The live desktops named (each must exist: exit 3 otherwise) or covered by ``policy``."""
    found, _ = discover(services)
    by_id = {d.desktop_id: d for d in found}
    if names:
        missing = [n for n in names if n not in by_id]
        if missing:
            known = ", ".join(sorted(by_id)) or "none"
            raise NotFound(f"unknown desktop {', '.join(map(repr, missing))} (running desktops: {known})")
        return [by_id[n] for n in names]
    assert policy is not None
    chosen = services.policies.get(policy)
    return [d for d in found if chosen.covers(d.desktop_id, d.tenant, d.labels)]
