"""Per-tenant data keys, stored in the chunk store wrapped by the key provider (envelope encryption).

A tenant's objects -- chunks, frames and indexes of its packs, manifests, its base-image records --
are sealed with the tenant's **data key** (format-2 seals name the key: ``drsvc.crypto``), and its
chunk ids and chunker gear table are keyed by it, so dedup stays inside a tenant and equal content
in two tenants gets different ids. Data keys live in the store they protect::

    keys/<key id>               {"format": "drsvc-data-key/1", "key_id", "provider", "kek",
                                 "wrapped": hex(provider.wrap({"key", "tenant", "created_at"},
                                                              aad = "drsvc/" + object key))}
    keys/current/<tenant tag>   {"format": "drsvc-current-key/1", "kek",
                                 "wrapped": hex(provider.wrap({"tenant", "key_id", "since"}, aad))}

A reader finds a key by the id an object names (one GET, cached; never a listing: listing a RADOS
pool walks all of it). A writer finds its tenant's **current** key through the tenant's pointer
(re-read at most once a minute, so a running scheduler sees a rotation); ``rotate`` writes a new
record, then moves the pointer: the tenant's new points use the new key, older points keep theirs
(records are never deleted). The tenant tag is the first 32 hex of BLAKE3(tenant name), so a
listing shows no names; names are inside the wrapped payloads. Wrapped for their own object key,
a record cannot stand in for another id, nor a pointer for another tenant; a record's key must
hash to its id and a pointer must name a key of its own tenant.

Records travel with the store: tiering copies a point's record to the cold store verbatim before
its packs, an off-site copy takes ``keys/`` like the rest, and whoever holds the KEK reads them.
The fleet key -- the master key of ``drsvc.kms.FileKeyProvider`` -- seals format-1 objects: the
fleet scope (``[keys] scope = "fleet"``) and everything written before per-tenant keys.
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
from drsvc.errors import IntegrityError, InvalidInput, NotFound
from drsvc.kms import KeyProvider
from drsvc.storage.base import ObjectStore

RECORD_FORMAT = "drsvc-data-key/1"
POINTER_FORMAT = "drsvc-current-key/1"
CURRENT_PREFIX = f"{KEYS_PREFIX}current/"
RELOAD_SECONDS = 60.0  # a long-running process sees another's rotation within this


def tenant_tag(tenant: str) -> str:
    """The key segment of a tenant's pointer (any name is valid; listings show no names)."""
    return blake3.blake3(tenant.encode()).hexdigest()[:32]


def record_key(key_id: str) -> str:
    """Object key of a data key's record."""
    return f"{KEYS_PREFIX}{key_id}"


def pointer_key(tenant: str) -> str:
    """Object key of a tenant's current-key pointer."""
    return f"{CURRENT_PREFIX}{tenant_tag(tenant)}"


@dataclass(frozen=True)
class KeyRecord:
    """One data key of one tenant, unwrapped."""

    tenant: str
    keys: Keys
    created_at: datetime

    @property
    def key_id(self) -> str:
        return self.keys.fingerprint

    @property
    def object_key(self) -> str:
        return record_key(self.key_id)


class Keyring:
    """The data keys of one store, and the codec and cutter of each key; thread-safe."""

    def __init__(self, store: ObjectStore, provider: KeyProvider, params: ChunkerParams, *, level: int = 3) -> None:
        self.store = store
        self.provider = provider
        self.fleet = provider.fleet_keys()
        self.params = params
        self.level = level
        self._records: dict[str, KeyRecord] = {}  # key id -> record
        self._current: dict[str, tuple[str, float]] = {}  # tenant -> (key id, when read)
        self._codecs: dict[str | None, Codec] = {}
        self._cutters: dict[str | None, Cutter] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------ keys

    def keys(self, key_id: str | None) -> Keys:
        """The key with this id (None: the fleet key); ``IntegrityError`` if the store has no such key."""
        if key_id is None or key_id == self.fleet.key_id:
            return self.fleet
        return self.record(key_id).keys

    def record(self, key_id: str) -> KeyRecord:
        """The record of a data key (read once, then cached)."""
        record = self._records.get(key_id)
        if record is not None:
            return record
        key = record_key(key_id)
        try:
            raw = self.store.get(key, max_size=KEY_RECORD_MAX)
        except NotFound:
            raise IntegrityError(f"{self.store.url}: no data key {key_id} (deleted, or not copied here)") from None
        record = self._open_record(key, raw)
        with self._lock:
            return self._records.setdefault(key_id, record)

    def keys_of(self, blob: bytes | memoryview) -> Keys:
        """The key that opens a sealed object (its header names it)."""
        return self.keys(sealed_key_id(blob))

    def current(self, tenant: str) -> Keys:
        """The tenant's current data key; made (and stored, wrapped) on a tenant's first write."""
        with self._lock:
            cached = self._current.get(tenant)
            if cached is not None and time.monotonic() - cached[1] <= RELOAD_SECONDS:
                return self.keys(cached[0])
            key_id = self.current_id(tenant)
            if key_id is None:
                return self.rotate(tenant).keys
            return self.keys(key_id)

    def current_id(self, tenant: str) -> str | None:
        """The id of the tenant's current key as its pointer says now (None: the tenant has none)."""
        key = pointer_key(tenant)
        try:
            raw = self.store.get(key, max_size=KEY_RECORD_MAX)
        except NotFound:
            return None
        try:
            doc = json.loads(raw)
            if doc["format"] != POINTER_FORMAT:
                raise ValueError("not a current-key pointer")
            self._check_kek(doc)
            payload = json.loads(self.provider.unwrap(bytes.fromhex(doc["wrapped"]), object_aad(key)))
            named, key_id = str(payload["tenant"]), str(payload["key_id"])
        except IntegrityError as e:
            raise IntegrityError(f"{key}: current-key pointer does not authenticate ({e})") from e
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"{key}: current-key pointer is unreadable ({e})") from e
        if named != tenant or self.record(key_id).tenant != tenant:
            raise IntegrityError(f"{key}: current-key pointer names another tenant's key")
        with self._lock:
            self._current[tenant] = (key_id, time.monotonic())
        return key_id

    def rotate(self, tenant: str) -> KeyRecord:
        """Make a new data key for ``tenant``, store it, then point the tenant at it."""
        keys = Keys.generate(tagged=True)
        created = clock.now()
        record = KeyRecord(tenant, keys, created)
        payload = {"key": keys.master.hex(), "tenant": tenant, "created_at": clock.to_iso(created)}
        self.store.put(record.object_key, self._wrapped(record.object_key, RECORD_FORMAT, payload, keys.fingerprint))
        pointer = {"tenant": tenant, "key_id": keys.fingerprint, "since": clock.to_iso(created)}
        self.store.put(pointer_key(tenant), self._wrapped(pointer_key(tenant), POINTER_FORMAT, pointer, None))
        with self._lock:
            self._records[record.key_id] = record
            self._current[tenant] = (record.key_id, time.monotonic())
        return record

    def records(self) -> list[KeyRecord]:
        """Every data key of the store, oldest first (one listing of ``keys/``: for ``drsvc keys``)."""
        names = [k for k in self.store.list(KEYS_PREFIX) if k.count("/") == 1]
        wanted = [k for k in names if k.rsplit("/", 1)[-1] not in self._records]
        for key, raw in self.store.get_many(wanted, max_size=KEY_RECORD_MAX):
            record = self._open_record(key, raw)
            with self._lock:
                self._records.setdefault(record.key_id, record)
        listed = {k.rsplit("/", 1)[-1] for k in names}
        return sorted((r for r in self._records.values() if r.key_id in listed), key=lambda r: (r.created_at, r.key_id))

    def is_current(self, record: KeyRecord) -> bool:
        """Whether ``record`` is the key its tenant's pointer names."""
        return self.current_id(record.tenant) == record.key_id

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

    def sealed_record(self, key_id: str) -> tuple[str, bytes]:
        """``(object key, record as stored)`` of a data key: to copy it verbatim to another store."""
        key = record_key(key_id)
        return key, self.store.get(key, max_size=KEY_RECORD_MAX)

    def add_sealed(self, key: str, raw: bytes) -> KeyRecord:
        """Store a record copied from another store (authenticated first); returns it unwrapped."""
        record = self._open_record(key, raw)
        with self._lock:
            if record.key_id in self._records:
                return self._records[record.key_id]
        try:
            self.store.get(key, max_size=KEY_RECORD_MAX)
        except NotFound:
            self.store.put(key, raw)
        with self._lock:
            return self._records.setdefault(record.key_id, record)

    def _wrapped(self, key: str, fmt: str, payload: dict[str, str], key_id: str | None) -> bytes:
        doc = {
            "format": fmt,
            "provider": self.provider.name,
            "kek": self.provider.fingerprint,
            "wrapped": self.provider.wrap(json.dumps(payload, sort_keys=True).encode(), object_aad(key)).hex(),
        }
        if key_id is not None:
            doc["key_id"] = key_id
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    def _check_kek(self, doc: dict[str, object]) -> None:
        if doc["kek"] != self.provider.fingerprint:
            raise ValueError(f"wrapped by key {doc['kek']}, not by this provider's {self.provider.fingerprint}")

    def _open_record(self, key: str, raw: bytes) -> KeyRecord:
        """Authenticate and unwrap one record; ``IntegrityError`` naming it if anything is off."""
        try:
            doc = json.loads(raw)
            if doc["format"] != RECORD_FORMAT:
                raise ValueError("not a data key record")
            self._check_kek(doc)
            payload = json.loads(self.provider.unwrap(bytes.fromhex(doc["wrapped"]), object_aad(key)))
            keys = Keys(bytes.fromhex(payload["key"]), tagged=True)
            tenant, created = str(payload["tenant"]), clock.from_iso(payload["created_at"])
        except IntegrityError as e:
            raise IntegrityError(f"{key}: data key record does not authenticate ({e})") from e
        except (ValueError, KeyError, TypeError, InvalidInput) as e:
            raise IntegrityError(f"{key}: data key record is unreadable ({e})") from e
        if len(keys.master) != KEY_BYTES or key != record_key(keys.fingerprint):
            raise IntegrityError(f"{key}: data key record does not match its place")
        return KeyRecord(tenant, keys, created)
