"""Per-tenant data keys, stored in the chunk store wrapped by the key provider (envelope encryption).

A tenant's objects -- chunks, frames and indexes of its packs, manifests, its base-image records --
are sealed with the tenant's **data key** (format-2 seals name the key: ``drsvc.crypto``), and its
chunk ids and chunker gear table are keyed by it, so dedup stays inside a tenant and equal
content in two tenants gets different ids. Data keys live in the store they protect, one object
each::

    keys/<tenant tag>/<key id>   {"format": "drsvc-data-key/1", "tenant_tag": ..., "key_id": ...,
                                  "provider": "file", "kek": "<KEK fingerprint>",
                                  "wrapped": hex(provider.wrap({"key", "tenant", "created_at"},
                                                               aad = "drsvc/" + object key))}

``tenant tag`` is the first 32 hex of BLAKE3(tenant name), so any tenant name is a valid key and a
bucket listing shows no names; the name itself is inside the wrapped payload. Wrapped for its own
key, a record cannot be moved to another tenant or id; its data key must hash to its id. Records
travel with the store: tiering copies a point's record to the cold store verbatim before its
packs, an off-site copy takes ``keys/`` like the rest, and whoever holds the KEK reads them.

A tenant's **current** key is its newest record; ``rotate`` adds a newer one, so new points use it
while older points stay readable with theirs (records are never deleted). Whatever holds the fleet
key -- the master key of ``drsvc.kms.FileKeyProvider`` -- is what seals format-1 objects: the fleet
scope (``[keys] scope = "fleet"``) and everything written before per-tenant keys.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import blake3

from drsvc import clock
from drsvc.chunks.codec import Codec
from drsvc.chunks.cutter import ChunkerParams, Cutter
from drsvc.chunks.layout import KEY_RECORD_MAX, KEYS_PREFIX, object_aad
from drsvc.crypto import KEY_BYTES, Keys, sealed_key_id
from drsvc.errors import IntegrityError, NotFound
from drsvc.kms import KeyProvider
from drsvc.storage.base import ObjectStore

RECORD_FORMAT = "drsvc-data-key/1"
RELOAD_SECONDS = 60.0  # a long-running process sees another's rotation within this


def tenant_tag(tenant: str) -> str:
    """The key segment of a tenant's records (any name is valid; listings show no names)."""
    return blake3.blake3(tenant.encode()).hexdigest()[:32]


def record_key(tenant: str, key_id: str) -> str:
    """Object key of a data key's record."""
    return f"{KEYS_PREFIX}{tenant_tag(tenant)}/{key_id}"


@dataclass(frozen=True)
class KeyRecord:
    """One data key of one tenant, unwrapped."""

    tenant: str
    keys: Keys
    created_at: datetime
    object_key: str

    @property
    def key_id(self) -> str:
        return self.keys.fingerprint


class Keyring:
    """The data keys of one store, and the codec and cutter of each key; thread-safe."""

    def __init__(self, store: ObjectStore, provider: KeyProvider, params: ChunkerParams, *, level: int = 3) -> None:
        self.store = store
        self.provider = provider
        self.fleet = provider.fleet_keys()
        self.params = params
        self.level = level
        self._records: dict[str, KeyRecord] = {}  # key id -> record
        self._codecs: dict[str | None, Codec] = {}
        self._cutters: dict[str | None, Cutter] = {}
        self._loaded_at: float | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------ keys

    def keys(self, key_id: str | None) -> Keys:
        """The key with this id (None: the fleet key); ``IntegrityError`` if the store has no such key."""
        if key_id is None or key_id == self.fleet.key_id:
            return self.fleet
        record = self._records.get(key_id)
        if record is None:
            self.load()  # written since we listed (another writer, a rotation)
            record = self._records.get(key_id)
        if record is None:
            raise IntegrityError(
                f"{self.store.url}: no data key {key_id} in {KEYS_PREFIX} (deleted, or not copied here)"
            )
        return record.keys

    def keys_of(self, blob: bytes | memoryview) -> Keys:
        """The key that opens a sealed object (its header names it)."""
        return self.keys(sealed_key_id(blob))

    def current(self, tenant: str) -> Keys:
        """The tenant's newest data key; made (and stored, wrapped) on a tenant's first write."""
        with self._lock:
            self.ensure_loaded()
            newest = self._newest(tenant)
            return newest.keys if newest is not None else self.rotate(tenant).keys

    def rotate(self, tenant: str) -> KeyRecord:
        """Make a new data key for ``tenant`` and store it: the tenant's new points use it."""
        keys = Keys.generate(tagged=True)
        created = clock.now()
        key = record_key(tenant, keys.fingerprint)
        payload = json.dumps(
            {"key": keys.master.hex(), "tenant": tenant, "created_at": clock.to_iso(created)}, sort_keys=True
        ).encode()
        doc = {
            "format": RECORD_FORMAT,
            "tenant_tag": tenant_tag(tenant),
            "key_id": keys.fingerprint,
            "provider": self.provider.name,
            "kek": self.provider.fingerprint,
            "wrapped": self.provider.wrap(payload, object_aad(key)).hex(),
        }
        self.store.put(key, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")
        record = KeyRecord(tenant, keys, created, key)
        with self._lock:
            self._records[record.key_id] = record
        return record

    def records(self) -> list[KeyRecord]:
        """Every data key of the store, oldest first."""
        self.load()
        return sorted(self._records.values(), key=lambda r: (r.created_at, r.key_id))

    def is_current(self, record: KeyRecord) -> bool:
        """Whether ``record`` is its tenant's newest key."""
        newest = self._newest(record.tenant)
        return newest is not None and newest.key_id == record.key_id

    def _newest(self, tenant: str) -> KeyRecord | None:
        mine = [r for r in self._records.values() if r.tenant == tenant]
        return max(mine, key=lambda r: (r.created_at, r.key_id)) if mine else None

    # ------------------------------------------------------------ codecs and cutters per key

    def codec(self, keys: Keys) -> Codec:
        """The codec that seals and opens with ``keys`` (one per key, shared)."""
        codec = self._codecs.get(keys.key_id)
        if codec is None:
            with self._lock:
                codec = self._codecs.setdefault(keys.key_id, Codec(keys, self.level))
        return codec

    def codec_of(self, blob: bytes | memoryview) -> Codec:
        """The codec of the key a sealed object names."""
        return self.codec(self.keys_of(blob))

    def cutter(self, keys: Keys, block_size: int) -> Cutter:
        """The chunker of ``keys`` (its gear table is keyed too)."""
        cutter = self._cutters.get(keys.key_id)
        if cutter is None:
            with self._lock:
                cutter = self._cutters.setdefault(keys.key_id, Cutter(self.params, keys.chunker_seed, block_size))
        return cutter

    # ------------------------------------------------------------ records in the store

    def ensure_loaded(self) -> None:
        """List and unwrap the records once (again after ``RELOAD_SECONDS``)."""
        if self._loaded_at is None or time.monotonic() - self._loaded_at > RELOAD_SECONDS:
            self.load()

    def load(self) -> None:
        """List ``keys/`` and unwrap the records not seen yet."""
        with self._lock:
            wanted = [k for k in self.store.list(KEYS_PREFIX) if k.rsplit("/", 1)[-1] not in self._records]
            for key, raw in self.store.get_many(wanted, max_size=KEY_RECORD_MAX):
                record = self._open(key, raw)
                self._records[record.key_id] = record
            self._loaded_at = time.monotonic()

    def sealed_record(self, key_id: str) -> tuple[str, bytes]:
        """``(object key, record as stored)`` of a data key: to copy it verbatim to another store."""
        record = self._records.get(key_id)
        if record is None:
            self.keys(key_id)
            record = self._records[key_id]
        return record.object_key, self.store.get(record.object_key, max_size=KEY_RECORD_MAX)

    def add_sealed(self, key: str, raw: bytes) -> KeyRecord:
        """Store a record copied from another store (authenticated first); returns it unwrapped."""
        record = self._open(key, raw)
        with self._lock:
            if record.key_id not in self._records:
                try:
                    self.store.get(key, max_size=KEY_RECORD_MAX)
                except NotFound:
                    self.store.put(key, raw)
                self._records[record.key_id] = record
        return record

    def _open(self, key: str, raw: bytes) -> KeyRecord:
        """Authenticate and unwrap one record; ``IntegrityError`` naming it if anything is off."""
        parts = key.split("/")
        try:
            doc = json.loads(raw)
            if doc["format"] != RECORD_FORMAT or len(parts) != 3:
                raise ValueError("not a data key record")
            if doc["kek"] != self.provider.fingerprint:
                raise ValueError(f"wrapped by key {doc['kek']}, not by this provider's {self.provider.fingerprint}")
            payload = json.loads(self.provider.unwrap(bytes.fromhex(doc["wrapped"]), object_aad(key)))
            keys = Keys(bytes.fromhex(payload["key"]), tagged=True)
            tenant, created = str(payload["tenant"]), clock.from_iso(payload["created_at"])
        except IntegrityError as e:
            raise IntegrityError(f"{key}: data key record does not authenticate ({e})") from e
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"{key}: data key record is unreadable ({e})") from e
        if len(keys.master) != KEY_BYTES or parts[1] != tenant_tag(tenant) or parts[2] != keys.fingerprint:
            raise IntegrityError(f"{key}: data key record does not match its place")
        return KeyRecord(tenant, keys, created, key)
