"""``drsvc keys``: the data keys of the stores -- list them, rotate a tenant's (``drsvc.chunks.keyring``).

Rotation writes a new wrapped data key to the hot store; from then on (within a minute for a
running scheduler) the tenant's new points use it, while its older points keep theirs (records
are never deleted, and every object names its key). The cold store receives a key's record when
the first point using it is tiered. The fleet key -- the key file itself -- is not rotated here:
every store's config is sealed with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drsvc import clock
from drsvc.errors import InvalidInput, NotFound
from drsvc.services import Services


@dataclass
class KeyRow:
    """One data key, as ``keys list`` shows it."""

    tenant: str | None  # None: the fleet key
    key_id: str
    created_at: str | None
    current: bool
    stores: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "key_id": self.key_id,
            "created_at": self.created_at,
            "current": self.current,
            "stores": self.stores,
        }


def list_keys(services: Services) -> dict[str, Any]:
    """Every data key of the configured stores, the fleet key first."""
    fleet = services.keys
    rows: dict[str, KeyRow] = {fleet.fingerprint: KeyRow(None, fleet.fingerprint, None, True)}
    tiers = [("hot", services.hot)] if services.config.hot else []
    if services.has_cold:
        tiers.append(("cold", services.cold))
    for name, store in tiers:
        rows[fleet.fingerprint].stores.append(name)
        for record in store.keyring.records():
            row = rows.setdefault(
                record.key_id, KeyRow(record.tenant, record.key_id, clock.to_iso(record.created_at), False)
            )
            row.stores.append(name)
            if name == "hot" or "hot" not in [t for t, _ in tiers]:
                row.current = row.current or store.keyring.is_current(record)
    return {
        "scope": services.config.keys.scope,
        "provider": services.key_provider.name,
        "kek": services.key_provider.fingerprint,
        "keys": [r.document() for r in rows.values()],
    }


def rotate_keys(services: Services, tenant: str | None, *, dry_run: bool) -> dict[str, Any]:
    """A new data key for ``tenant``, or for every tenant with a key or a desktop; what changed."""
    if services.config.keys.scope == "fleet":
        raise InvalidInput(
            f"{services.config.path}: keys.scope is fleet: every desktop uses the key file's key, there is no "
            'data key to rotate (set keys.scope = "tenant" for per-tenant keys)'
        )
    hot = services.hot
    known = {r.tenant for r in hot.keyring.records()}
    known |= {d["tenant"] for d in services.catalog.desktops() if d.get("tenant")}
    if tenant is not None and tenant not in known:
        # a typo must not mint a key for a tenant nobody has
        names = ", ".join(sorted(known)) or "none"
        raise NotFound(
            f"unknown tenant {tenant!r}: no desktop and no data key has it (known: {names}; "
            "drsvc desktops discover finds new desktops)"
        )
    tenants = [tenant] if tenant is not None else sorted(known)
    rotated = []
    for name in tenants:
        old = [r for r in hot.keyring.records() if r.tenant == name and hot.keyring.is_current(r)]
        new = None if dry_run else hot.keyring.rotate(name).key_id
        rotated.append({"tenant": name, "old_key_id": old[0].key_id if old else None, "new_key_id": new})
    return {"dry_run": dry_run, "store": hot.store.url, "rotated": rotated}
