"""The store's ``config`` object: what a store is (format, version, chunker, codec, cipher), and
which key it was made with.

``config`` is plaintext JSON, written by ``init`` and read by every ``open``: format and version
(an older drsvc refuses a newer store), the chunker parameters (every writer must cut alike), the
key fingerprint (a wrong key is recognised by name) and a sealed key check (a wrong key fails
before anything is written). A store that holds packs records ``packs``/``frames`` and version 4.
"""

from __future__ import annotations

import json
from typing import Any

from drsvc.chunks.cutter import ChunkerParams
from drsvc.chunks.layout import CONFIG_KEY, FORMAT, FORMAT_VERSION, FRAME_MAX, FRAME_SIZE, PACK_SIZE, object_aad
from drsvc.crypto import Keys
from drsvc.errors import IntegrityError, InvalidInput, NotFound
from drsvc.storage.base import ObjectStore

_KEY_CHECK = b"drsvc chunk store key check v1"


def packed_config(pack_size: int) -> dict[str, Any]:
    """What ``config`` records of a store that keeps its chunks in packs (with frames)."""
    return {
        "version": FORMAT_VERSION,
        "packs": {"target_size": pack_size},
        "frames": {"target_size": FRAME_SIZE, "max_size": FRAME_MAX},
    }


def _write(store: ObjectStore, config: dict[str, Any]) -> None:
    store.put(CONFIG_KEY, json.dumps(config, indent=1, sort_keys=True).encode() + b"\n")


def create_config(store: ObjectStore, keys: Keys, params: ChunkerParams, pack_size: int | None) -> dict[str, Any]:
    """Write the config of a new store; refuse if one exists there."""
    if store.exists(CONFIG_KEY):
        raise InvalidInput(f"{store.url} already holds a chunk store (config exists); open it instead")
    config: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "chunker": params.to_dict(),
        "compression": "zstd",
        "encryption": "aes-256-gcm",
        "chunk_id": "blake3-keyed",
        "key_fingerprint": keys.fingerprint,
        "key_check": keys.seal(_KEY_CHECK, object_aad(CONFIG_KEY)).hex(),
    }
    if pack_size:
        config.update(packed_config(pack_size))
    _write(store, config)
    return config


def read_config(store: ObjectStore, keys: Keys) -> dict[str, Any]:
    """Read an existing store's config, checking format version and that ``keys`` is its key."""
    try:
        raw = store.get(CONFIG_KEY)
    except NotFound:
        raise NotFound(f"no chunk store at {store.url} (no config object); initialise it first") from None
    try:
        config = json.loads(raw)
        fmt, version = config["format"], int(config["version"])
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidInput(f"{store.url}: config is not a drsvc chunk store config ({e})") from e
    if fmt != FORMAT:
        raise InvalidInput(f"{store.url}: not a drsvc chunk store (format {fmt!r})")
    if version > FORMAT_VERSION:
        raise InvalidInput(
            f"{store.url}: chunk store format {version} is newer than this drsvc knows ({FORMAT_VERSION})"
        )
    if config.get("key_fingerprint") != keys.fingerprint:
        raise InvalidInput(
            f"wrong key for the chunk store at {store.url}: it was created with key "
            f"{config.get('key_fingerprint')}, the key given is {keys.fingerprint}"
        )
    try:
        check = keys.open_(bytes.fromhex(config["key_check"]), object_aad(CONFIG_KEY))
    except (KeyError, ValueError, TypeError, IntegrityError):
        check = b""
    if check != _KEY_CHECK:
        raise IntegrityError(f"{store.url}: the key check in config does not verify (config tampered?)")
    return config


def stored_pack_size(config: dict[str, Any]) -> int | None:
    """The pack size a store that holds packs was made with (None: a store of loose chunks)."""
    packs = config.get("packs")
    return int(packs.get("target_size") or PACK_SIZE) if isinstance(packs, dict) else None


def upgrade_config(store: ObjectStore, config: dict[str, Any] | None, pack_size: int) -> dict[str, Any] | None:
    """Record in ``config`` that the store holds packs and frames (version 4: older drsvc refuses it)."""
    if config is None or int(config.get("version", 1)) >= FORMAT_VERSION:
        return config
    config = {**config, **packed_config(pack_size)}
    _write(store, config)
    return config
