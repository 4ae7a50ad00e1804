"""The store's ``config`` object: what a store is (format, chunker, codec, cipher, packs) and which
key made it -- sealed like every other object.

Version 5 (written by ``init``, and by the first write to an older store)::

    {"format": "drsvc-chunkstore", "version": 5, "key_fingerprint": "<16 hex>",
     "sealed": "<hex of seal(JSON settings, aad = b'drsvc/config')>"}

The plaintext part only lets a reader say what it is looking at (a drsvc store, too new, made
with key X); everything a reader acts on -- chunker parameters (every writer must cut alike), codec
and cipher names, pack and frame sizes -- is in ``sealed`` and comes from there alone, so a bucket
writer cannot change how drsvc cuts, compresses or reads. Opening it with another key fails before
anything is written (the fingerprint names both keys; a config that does not authenticate is an
``IntegrityError``).

**Stores written before version 5** keep a plaintext config (versions 1-4) whose only sealed part
is a key check. The rule for them: they are read as before -- key check verified, every value
validated (chunker parameters within ``ChunkerParams``' bounds, pack size within ``PACK_MAX``) --
and the **first write** through drsvc (a chunk, a pack or a manifest) rewrites the config sealed,
with the same settings (``ConfigFile.ensure_sealed``): a store in use is migrated by its next
backup or tiering run, no command needed. Until then a bucket writer could replace the chunker
parameters of an unsealed store by other *valid* ones; that changes where new chunks are cut
(dedup lost, so more space used), never what is read back (every chunk is authenticated and
re-hashed). Replaying an old unsealed config over a sealed one has the same, bounded, effect and
is undone by the next write.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from drsvc.chunks.cutter import ChunkerParams
from drsvc.chunks.layout import (
    CONFIG_KEY,
    CONFIG_MAX,
    FORMAT,
    FORMAT_VERSION,
    FRAME_MAX,
    FRAME_SIZE,
    PACK_MAX,
    PACK_SIZE,
    object_aad,
)
from drsvc.crypto import Keys
from drsvc.errors import IntegrityError, InvalidInput, NotFound
from drsvc.storage.base import ObjectStore

SEALED_VERSION = 5  # the first version whose config is sealed
_KEY_CHECK = b"drsvc chunk store key check v1"  # versions 1-4: the only sealed part of their config


def packed_settings(pack_size: int) -> dict[str, Any]:
    """What the settings record of a store that keeps its chunks in packs (with frames)."""
    return {
        "packs": {"target_size": pack_size},
        "frames": {"target_size": FRAME_SIZE, "max_size": FRAME_MAX},
    }


class ConfigFile:
    """The config of one store: its settings, whether they were read sealed, and the upgrades."""

    def __init__(self, store: ObjectStore, keys: Keys, settings: dict[str, Any], *, sealed: bool) -> None:
        self.store = store
        self.keys = keys
        self.settings = settings  # format, version, chunker, compression, encryption, chunk_id[, packs, frames]
        self.sealed = sealed
        self._lock = threading.Lock()

    # ------------------------------------------------------------ create, read

    @classmethod
    def create(cls, store: ObjectStore, keys: Keys, params: ChunkerParams, pack_size: int | None) -> ConfigFile:
        """Write the (sealed) config of a new store; refuse if one exists there."""
        if store.exists(CONFIG_KEY):
            raise InvalidInput(f"{store.url} already holds a chunk store (config exists); open it instead")
        settings: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "chunker": params.to_dict(),
            "compression": "zstd",
            "encryption": "aes-256-gcm",
            "chunk_id": "blake3-keyed",
        }
        if pack_size:
            settings.update(packed_settings(_pack_size(store, pack_size)))
        config = cls(store, keys, settings, sealed=False)
        config._write_sealed(settings)
        return config

    @classmethod
    def read(cls, store: ObjectStore, keys: Keys) -> ConfigFile:
        """Read an existing store's config, checking format, version, that ``keys`` is its key, and
        (sealed) that it authenticates; ``NotFound`` if there is none."""
        try:
            raw = store.get(CONFIG_KEY, max_size=CONFIG_MAX)
        except NotFound:
            raise NotFound(f"no chunk store at {store.url} (no config object); initialise it first") from None
        try:
            outer = json.loads(raw)
            fmt, version = outer["format"], int(outer["version"])
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidInput(f"{store.url}: config is not a drsvc chunk store config ({e})") from e
        if fmt != FORMAT:
            raise InvalidInput(f"{store.url}: not a drsvc chunk store (format {fmt!r})")
        if version > FORMAT_VERSION:
            raise InvalidInput(
                f"{store.url}: chunk store format {version} is newer than this drsvc knows ({FORMAT_VERSION})"
            )
        if outer.get("key_fingerprint") != keys.fingerprint:
            raise InvalidInput(
                f"wrong key for the chunk store at {store.url}: it was created with key "
                f"{outer.get('key_fingerprint')}, the key given is {keys.fingerprint}"
            )
        if version >= SEALED_VERSION:
            settings = _open_sealed(store, keys, outer, version)
            sealed = True
        else:
            settings = _check_unsealed(store, keys, outer)
            sealed = False
        _validate(store, settings)
        return cls(store, keys, settings, sealed=sealed)

    # ------------------------------------------------------------ what the settings say

    @property
    def params(self) -> ChunkerParams:
        """The chunker parameters every writer of this store uses."""
        return ChunkerParams.from_dict(self.settings["chunker"])

    @property
    def pack_size(self) -> int | None:
        """The pack size a store that holds packs was made with (None: a store of loose chunks)."""
        packs = self.settings.get("packs")
        return int(packs.get("target_size") or PACK_SIZE) if isinstance(packs, dict) else None

    # ------------------------------------------------------------ upgrades (by writers)

    def ensure_sealed(self, pack_size: int | None = None) -> None:
        """Before a write: seal an older store's config, and record packs when ``pack_size`` is given."""
        if self.sealed and (not pack_size or self.pack_size):
            return
        with self._lock:
            settings = dict(self.settings)
            if pack_size and not isinstance(settings.get("packs"), dict):
                settings.update(packed_settings(pack_size))
            settings["version"] = FORMAT_VERSION
            if not self.sealed or settings != self.settings:
                self._write_sealed(settings)

    def _write_sealed(self, settings: dict[str, Any]) -> None:
        body = json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()
        outer = {
            "format": FORMAT,
            "version": settings["version"],
            "key_fingerprint": self.keys.fingerprint,
            "sealed": self.keys.seal(body, object_aad(CONFIG_KEY)).hex(),
        }
        self.store.put(CONFIG_KEY, json.dumps(outer, indent=1, sort_keys=True).encode() + b"\n")
        self.settings, self.sealed = settings, True


def _open_sealed(store: ObjectStore, keys: Keys, outer: dict[str, Any], version: int) -> dict[str, Any]:
    try:
        body = keys.open_(bytes.fromhex(outer["sealed"]), object_aad(CONFIG_KEY))
        settings = json.loads(body)
    except (KeyError, ValueError, TypeError) as e:
        raise IntegrityError(f"{store.url}: config is sealed but unreadable ({e})") from e
    except IntegrityError:
        raise IntegrityError(f"{store.url}: config does not authenticate (tampered, or another key's)") from None
    if not isinstance(settings, dict) or settings.get("format") != FORMAT or settings.get("version") != version:
        raise IntegrityError(f"{store.url}: sealed config does not match its plaintext header (tampered?)")
    return settings


def _check_unsealed(store: ObjectStore, keys: Keys, config: dict[str, Any]) -> dict[str, Any]:
    """A version 1-4 config: its key check verifies; its settings are what it says (validated later)."""
    try:
        check = keys.open_(bytes.fromhex(config["key_check"]), object_aad(CONFIG_KEY))
    except (KeyError, ValueError, TypeError, IntegrityError):
        check = b""
    if check != _KEY_CHECK:
        raise IntegrityError(f"{store.url}: the key check in config does not verify (config tampered?)")
    return {k: v for k, v in config.items() if k not in ("key_fingerprint", "key_check")}


def _validate(store: ObjectStore, settings: dict[str, Any]) -> None:
    """Every value a reader acts on is one drsvc could have written."""
    try:
        ChunkerParams.from_dict(settings["chunker"])
        packs = settings.get("packs")
        if packs is not None:
            _pack_size(store, int(packs["target_size"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InvalidInput(f"{store.url}: config has malformed settings ({e})") from e
    except InvalidInput as e:
        raise InvalidInput(f"{store.url}: config: {e}") from e


def _pack_size(store: ObjectStore, size: int) -> int:
    if not 0 < size <= PACK_MAX:
        raise InvalidInput(f"{store.url}: pack size {size} is outside 1..{PACK_MAX} bytes")
    return size
