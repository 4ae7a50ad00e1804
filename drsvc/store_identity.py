"""Which store a tier's copies went to: a mistyped bucket is refused, not created and filled.

Opening the cold store used to create a missing bucket, so ``[cold] store = "s3://drsvc-cld/fleet"``
(one letter off) started a second, empty store: tiering filled it, and ``verify --all`` reported
every earlier copy missing. A store now has an **identity**: a small plain object ``identity`` at
its root (``{"format": "drsvc-store-identity", "id": <random hex>}``) written when drsvc creates the
store (and added to an older store drsvc opens and the catalog vouches for), and remembered in the
catalog (``store_identity``, migration 18) per URL and tier.

Before a tier's configured store is opened (``Guard``):

- the catalog records copies of that tier in **another** store, and this URL is not one it knows:
  refused (``ConfigError``, exit 2), naming both, **before** anything is created;
- the catalog records copies **in** this store (or has seen it), but it holds no drsvc store (a
  missing bucket or pool, or an emptied one): refused, nothing created;
- the store's identity object differs from the one recorded for this URL (another store behind the
  same name): refused.

A brand-new deployment (no copies of the tier anywhere) creates its store as before. A procedure
that needs a new, empty store on purpose (the hot pool lost and recreated, runbook ceph-pool-lost;
moving a tier to a new bucket) says so once: ``drsvc catalog adopt-store TIER`` marks the
configured URL adopted, and the next open creates or accepts the store there and records its
identity. Site copies in the catalog (``point_sites``, and the cold-tier rows a ``site recover``
writes for them) are a site's, never the cold tier's: a recovered DR host that gets its own
``[cold]`` creates it without a word. Sites (``copy``) are checked the same way, by URL: the
catalog's ``point_sites`` say where each site's copies went.

An identity object is not authenticated: whoever can write the bucket can change it, and then
drsvc refuses the store (a denial of service only: everything drsvc reads is authenticated).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drsvc import clock
from drsvc.errors import ConfigError, DrsvcError, NotFound

if TYPE_CHECKING:
    from drsvc.catalog import Catalog
    from drsvc.storage.base import ObjectStore

IDENTITY_KEY = "identity"


class StoreMismatch(ConfigError):
    """The configured store is not the one the tier's copies went to (exit 2). Readers that check
    several tiers (``verify``, ``catalog check``) report it for that tier and go on with the others."""

    def __str__(self) -> str:  # where it is reported as one tier's reason: with its next step
        return f"{self.message}; {self.hint}" if self.hint else self.message


FORMAT = "drsvc-store-identity"


def read_identity(store: ObjectStore) -> str | None:
    """The store's identity, or None when it has none (an older store, or no store at all)."""
    try:
        doc = json.loads(store.get(IDENTITY_KEY, max_size=4096))
    except NotFound:
        return None
    except (ValueError, UnicodeDecodeError):
        return "unreadable"  # not one drsvc wrote: never equal to a recorded identity
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("id"), str):
        return "unreadable"
    return str(doc["id"])


def write_identity(store: ObjectStore) -> str:
    """Give the store a new identity object; returns it."""
    identity = secrets.token_hex(16)
    doc = {"format": FORMAT, "id": identity, "created_at": clock.to_iso(clock.now())}
    store.put(IDENTITY_KEY, json.dumps(doc).encode())
    return identity


@dataclass
class Known:
    """What the catalog remembers of one store URL."""

    identity: str | None
    adopted: bool


def known(catalog: Catalog, url: str) -> Known | None:
    try:
        rows = catalog.query("SELECT identity, adopted_at FROM store_identity WHERE url = ?", [url])
    except sqlite3.Error:
        return None
    if not rows:
        return None
    return Known(rows[0]["identity"], rows[0]["adopted_at"] is not None)


def remember(catalog: Catalog, url: str, tier: str, identity: str | None, *, adopted: bool = False) -> None:
    """Record ``url`` as ``tier``'s store with ``identity`` (``adopted``: accepted though empty or new)."""
    now = clock.to_iso(clock.now())
    try:
        catalog.execute(
            "INSERT INTO store_identity (url, tier, identity, adopted_at, seen_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (url) DO UPDATE SET tier = excluded.tier, identity = excluded.identity, "
            "adopted_at = excluded.adopted_at, seen_at = excluded.seen_at",
            [url, tier, identity, now if adopted else None, now],
        )
    except (sqlite3.Error, DrsvcError):
        return  # a read-only or damaged catalog: the check runs again next time


def adopt(catalog: Catalog, url: str, tier: str) -> None:
    """``drsvc catalog adopt-store``: the next open of ``url`` creates or accepts the store there."""
    remember(catalog, url, tier, None, adopted=True)


# ---------------------------------------------------------------------------- what the catalog records


def _site(tier: str) -> str | None:
    return tier.partition(":")[2] if tier.startswith("site:") else None


def copies_at(catalog: Catalog, tier: str, url: str) -> bool:
    """Whether the catalog records a copy of ``tier`` (``hot``, ``cold``, ``site:NAME``) in ``url``."""
    site = _site(tier)
    if site is not None:
        sql, args = "SELECT 1 FROM point_sites WHERE site = ? AND store_url = ? LIMIT 1", [site, url]
    else:
        sql, args = f"SELECT 1 FROM point_tiers t WHERE tier = ? AND store_url = ? AND {_NOT_SITE} LIMIT 1", [tier, url]
    return bool(catalog.query(sql, args))


def copies_elsewhere(catalog: Catalog, tier: str, url: str) -> tuple[str, int] | None:
    """The store (and how many copies) where the catalog records most of ``tier``'s copies, when it
    records some in another store than ``url``; None when it records none elsewhere."""
    site = _site(tier)
    if site is not None:
        where, args = "site = ? AND store_url != ?", [site, url]
        table = "point_sites t"
    else:
        where, args = f"tier = ? AND store_url != ? AND {_NOT_SITE}", [tier, url]
        table = "point_tiers t"
    if not catalog.query(f"SELECT 1 FROM {table} WHERE {where} LIMIT 1", args):
        return None
    rows = catalog.query(
        f"SELECT store_url, COUNT(*) AS n FROM {table} WHERE {where} GROUP BY store_url ORDER BY n DESC LIMIT 1", args
    )
    return str(rows[0]["store_url"]), int(rows[0]["n"])


def site_copies_as_cold(catalog: Catalog, cold_url: str | None) -> set[str]:
    """Points whose cold-tier row is a site's copy in another store than ``cold_url`` (``site
    recover`` records them so at a DR host): the site's to check (``verify --site``), not the cold
    tier's, once that host has a ``[cold]`` of its own."""
    rows = catalog.query(
        f"SELECT t.point_id FROM point_tiers t WHERE t.tier = 'cold' AND t.store_url != ? AND NOT {_NOT_SITE}",
        [cold_url or ""],
    )
    return {r["point_id"] for r in rows}


# a cold-tier row that is a site's copy (written by `site recover` at a DR host) is not the cold tier's
_NOT_SITE = "NOT EXISTS (SELECT 1 FROM point_sites s WHERE s.point_id = t.point_id AND s.store_url = t.store_url)"


# ---------------------------------------------------------------------------- the check


class Guard:
    """The identity check of one tier's configured store, around opening it (``drsvc.services``).

    ``setting`` names the config key for the messages (``cold.store``, ``sites.dr.store``), ``path``
    the config file.
    """

    def __init__(self, catalog: Catalog, tier: str, url: str, setting: str, path: object = "") -> None:
        self.catalog = catalog
        self.tier = tier
        self.url = url
        self.setting = setting
        self.where = f"{path}: {setting}" if path else setting
        self.known = known(catalog, url)
        self._vouched = False  # the catalog records copies here: an older store without identity gets one

    @property
    def adopt_command(self) -> str:
        site = _site(self.tier)
        return f"`drsvc catalog adopt-store {'--site ' + site if site else self.tier}`"

    def before_open(self) -> bool:
        """Refuse a store that is not where the tier's copies went; True: a missing store must be
        created (brand new, or adopted), False: one must be there already (never create it)."""
        if self.known is not None:
            return self.known.adopted and self.known.identity is None
        try:
            self._vouched = copies_at(self.catalog, self.tier, self.url)
            other = None if self._vouched else copies_elsewhere(self.catalog, self.tier, self.url)
        except sqlite3.Error:
            return True  # a catalog that cannot say: as before
        if other is not None:
            where, count = other
            raise StoreMismatch(
                f"{self.where} is {self.url}, but the catalog's {self._what} copies are in {where} ({count}), "
                "none there: nothing was created",
                hint=f"a typo? set {self.setting} back to {where}; a new, empty store on purpose: {self.adopt_command}",
            )
        return not self._vouched

    def missing(self, error: DrsvcError | None = None) -> None:
        """The store holds no drsvc store: refused unless it may be created (``before_open``)."""
        try:
            vouched = self._vouched or copies_at(self.catalog, self.tier, self.url)
        except sqlite3.Error:
            vouched = False
        count = f"{self._what} copies" if vouched else "the store it saw there"
        why = f" ({error.message})" if error is not None else ""
        raise StoreMismatch(
            f"{self.where} is {self.url}, which holds no drsvc store{why}, but the catalog records {count} "
            "there: its bucket or pool is missing or was emptied; nothing was created",
            hint=f"check {self.setting} and its endpoint (runbooks s3-unavailable, ceph-pool-lost); the store lost "
            f"and a new, empty one wanted there: {self.adopt_command}",
        )

    def created(self, store: ObjectStore) -> None:
        """A store drsvc just created: give it an identity and remember it."""
        remember(self.catalog, self.url, self.tier, write_identity(store))

    def opened(self, store: ObjectStore) -> None:
        """An existing store: its identity must be the one recorded for this URL (then remembered)."""
        found = read_identity(store)
        if self.known is not None and self.known.identity is not None and found != self.known.identity:
            raise StoreMismatch(
                f"{self.where} is {self.url}, but the store there is not the one the catalog's copies went to "
                f"(identity {found or 'none'}, recorded {self.known.identity})",
                hint=f"check {self.setting} and its endpoint; this store accepted as the {self._what} store: "
                f"{self.adopt_command}",
            )
        if found is None and (self._vouched or self.known is not None):
            try:
                found = write_identity(store)
            except DrsvcError:
                return  # a store drsvc may not write here (read-only credentials): checked by URL only
        if found is not None and (self.known is None or self.known.identity != found):
            remember(self.catalog, self.url, self.tier, found)

    @property
    def _what(self) -> str:
        site = _site(self.tier)
        return f"site {site}'s" if site else self.tier
