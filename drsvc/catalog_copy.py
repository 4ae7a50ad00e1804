"""Copies of the catalog in the stores, and bringing one back (``drsvc catalog restore``).

After every run that changed it, the catalog is copied with SQLite's online backup (consistent
while others keep using it), the ephemeral ``leases`` left out, compressed, sealed with the
store's key and written to the hot and the cold store::

    catalog-copies/<copy id>/part-0000 ...   sealed(zstd(SQLite file)), in parts of PART bytes
    catalog-copies/<copy id>/meta            sealed JSON: created, host, size, parts, keyed hash,
                                             schema version, number of points

``<copy id>`` sorts by time; the newest ``KEEP`` copies stay. Nothing is copied when nothing
changed since the last copy (``fingerprint``, remembered per store in ``<catalog>.copies``), so a
``run --once`` every minute with nothing due costs no upload. The stores are written at once, not
one after the other. Listing the copies costs a scan of the whole pool on a RADOS store, so a push
prunes the copies it remembers making (``<catalog>.copies`` keeps their ids) without a listing, and
lists the store only on its first push and every ``LIST_EVERY``-th: that listing also removes what
a push killed midway or another catalog left there.

``restore_copy`` takes the newest copy that authenticates, decompresses, matches its hash and
passes SQLite's integrity check, from any of the stores it is given, and puts it in place of
the catalog (a damaged one is moved aside, never deleted). The stores are the truth: the caller
then adds the points written after the copy with ``catalog rebuild``'s logic, which reads only
the manifests the catalog lacks — that is why a restore is much faster than a full rebuild.
``site recover`` (another site's store) calls ``restore_copy`` with its own stores.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from drsvc import clock, hostfs
from drsvc.catalog import Catalog
from drsvc.catalog_guard import copy_state, fingerprint, quarantine, quick_check, write_copy_state
from drsvc.chunks import ChunkStore
from drsvc.chunks.layout import object_aad
from drsvc.errors import BackendError, DrsvcError, IntegrityError, InvalidInput, NotFound
from drsvc.services import Services

PREFIX = "catalog-copies/"
PART = 12 * 1024 * 1024  # sealed parts stay single requests on every store
KEEP = 3
LIST_EVERY = 16  # pushes between two listing prunes of a store (see the module docstring)
MAX_PLAINTEXT = 64 * 1024**3  # refuse a meta claiming more: hostile store content stays bounded
_EPHEMERAL = ("leases",)  # who holds which lease means nothing after a restore (catalog_guard: the same)


@dataclass
class CopyInfo:
    """One copy as its ``meta`` describes it."""

    copy_id: str
    store: str  # label: hot, cold, or a site name
    created_at: str
    size: int
    parts: int
    digest: str
    points: int
    schema_version: int
    host: str

    def document(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RestoredCopy:
    """What ``restore_copy`` put in place."""

    copy: CopyInfo
    target: str
    moved_aside: str | None
    skipped: list[str] = field(default_factory=list)  # newer copies that failed a check, and why

    def document(self) -> dict[str, Any]:
        return {
            "copy": self.copy.document(),
            "target": self.target,
            "moved_aside": self.moved_aside,
            "skipped": self.skipped,
        }


# ---------------------------------------------------------------------- making copies
def stores_of(services: Services, *, opened_only: bool = False) -> list[tuple[str, ChunkStore]]:
    """The configured stores as (label, store): hot, then cold.

    ``opened_only``: the cold store only if this process opened it already (a run that used
    it), so a command that never needed S3 does not wait on it when it is down.
    """
    stores: list[tuple[str, ChunkStore]] = []
    if services.config.hot is not None:
        stores.append(("hot", services.hot))
    if services.has_cold and (not opened_only or "cold" in services.__dict__):
        stores.append(("cold", services.cold))
    return stores


def snapshot(catalog: Catalog) -> bytes:
    """A consistent copy of the catalog file (SQLite online backup), without the ephemeral tables.

    Written beside the catalog first: on a full or read-only disk that is a ``HostFsError``."""
    directory = os.path.dirname(os.path.abspath(catalog.path))
    try:
        return _snapshot(catalog, directory)
    except OSError as e:
        raise hostfs.os_error(directory, e) or BackendError(f"catalog copy: {e}") from e
    except sqlite3.OperationalError as e:
        raise hostfs.sqlite_error(catalog.path, e) or BackendError(f"catalog copy: {e}") from e


def _snapshot(catalog: Catalog, directory: str) -> bytes:
    fd, tmp = tempfile.mkstemp(prefix=".drsvc-catalog-copy-", dir=directory)
    os.close(fd)
    try:
        dest = sqlite3.connect(tmp)
        try:
            with catalog._lock:
                catalog.db.conn.backup(dest)
            for table in _EPHEMERAL:
                dest.execute(f"DELETE FROM {table}")
            dest.commit()
            dest.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            dest.close()
        return Path(tmp).read_bytes()
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp + suffix)


def push(catalog: Catalog, stores: Iterable[tuple[str, ChunkStore]], *, force: bool = False) -> dict[str, str]:
    """Copy the catalog to every store whose last copy is older than its last change.

    Returns ``{store label: copy id or error}``. A store that fails keeps its old fingerprint,
    so the next run tries it again; the others are not held back by it.
    """
    if catalog.damaged or catalog.path == ":memory:":
        return {}
    stores = list(stores)
    state = copy_state(catalog.path)
    current = fingerprint(catalog)
    due = [(label, store) for label, store in stores if force or state.get(label) != current]
    if not due:
        return {}
    raw = snapshot(catalog)
    blob = zstandard.ZstdCompressor(level=3).compress(raw)
    meta_base = {
        "created_at": clock.to_iso(clock.now()),
        "host": socket.gethostname(),
        "size": len(raw),
        "points": catalog.query("SELECT count(*) AS n FROM points")[0]["n"],
        "schema_version": catalog.schema_version,
    }
    # ids sort in the order copies were made, also within one second (restore takes the last,
    # pruning drops the first): microseconds before the random part
    copy_id = f"{clock.compact(clock.now())}-{time.time_ns() // 1000 % 10**6:06d}{os.urandom(3).hex()}"
    digest = {label: store.keys.chunk_id(raw) for label, store in due}

    def one(label: str, store: ChunkStore) -> str:
        parts = write_copy(store, copy_id, blob, {**meta_base, "digest": digest[label]})
        _prune(store, label, state, f"{copy_id}:{parts}")
        return copy_id

    results: dict[str, str] = {}
    # The stores are independent (a RADOS pool and an S3 bucket): written at once, not one after
    # the other. Each worker touches only its own label's entries of ``state``.
    with ThreadPoolExecutor(max_workers=len(due), thread_name_prefix="drsvc-catalog-copy") as pool:
        futures = {label: pool.submit(one, label, store) for label, store in due}
    for label, future in futures.items():
        try:
            results[label] = future.result()
        except DrsvcError as e:
            results[label] = f"error: {e}"
            continue
        state[label] = current
    write_copy_state(catalog.path, state)
    return results


def _prune(store: ChunkStore, label: str, state: dict[str, str], made: str) -> None:
    """Prune the copies in ``store`` after the copy ``made`` (``<copy id>:<parts>``).

    The ids of the copies this catalog made are remembered in ``state`` (``<label>:made``, oldest
    first); all but the newest ``KEEP`` are deleted without a listing. The first push to a store and
    every ``LIST_EVERY``-th lists it instead (``prune_copies``): strays are found only that way.
    """
    known = state.get(f"{label}:made")
    try:  # the state file is ours, but may be damaged: then it is as if it remembered nothing
        pushes = int(state.get(f"{label}:pushes", "0") or 0) + 1
        _part_keys(known.split() if known else [])
    except ValueError:
        known = None
    if known is None:
        pushes = 0
    history = [*(known.split() if known else []), made]
    if known is None or pushes % LIST_EVERY == 0:
        prune_copies(store)
    else:
        old = history[:-KEEP]
        metas = [f"{PREFIX}{entry.split(':')[0]}/meta" for entry in old]
        if metas:
            store.store.delete_many(metas)  # first: a copy without meta is never read
            store.store.delete_many(_part_keys(old))
    state[f"{label}:made"] = " ".join(history[-KEEP:])
    state[f"{label}:pushes"] = str(pushes)


def _part_keys(made: list[str]) -> list[str]:
    keys = []
    for entry in made:
        copy_id, _, parts = entry.partition(":")
        if "/" in copy_id or not copy_id or not 0 < int(parts or 1) <= 10_000:
            raise ValueError(f"not a copy this catalog made: {entry!r}")
        keys += [f"{PREFIX}{copy_id}/part-{n:04d}" for n in range(int(parts or 1))]
    return keys


def write_copy(store: ChunkStore, copy_id: str, blob: bytes, meta: dict[str, Any]) -> int:
    """Write one copy's sealed parts, then its meta (a copy without meta is never read); the number of parts."""
    parts = [blob[i : i + PART] for i in range(0, len(blob), PART)] or [b""]
    for n, part in enumerate(parts):
        key = f"{PREFIX}{copy_id}/part-{n:04d}"
        store.store.put(key, store.keys.seal(part, object_aad(key)))
    key = f"{PREFIX}{copy_id}/meta"
    doc = {**meta, "parts": len(parts), "compressed": len(blob)}
    store.store.put(key, store.keys.seal(json.dumps(doc).encode(), object_aad(key)))
    return len(parts)


def copy_ids(store: ChunkStore, keys: Iterable[str] | None = None) -> list[str]:
    """Ids of the complete copies in a store (those with a meta), oldest first; ``keys``: the store's
    keys under the copies' prefix when the caller listed them already."""
    listed = store.store.list(PREFIX) if keys is None else keys
    return sorted({k[len(PREFIX) :].split("/", 1)[0] for k in listed if k.endswith("/meta")})


def prune_copies(store: ChunkStore, keep: int = KEEP) -> None:
    """Delete all but the newest ``keep`` copies (and parts of copies that never got a meta).

    One listing: a RADOS store lists a prefix by scanning its whole pool, after every run."""
    keys = list(store.store.list(PREFIX))
    complete = copy_ids(store, keys)
    keep_ids = set(complete[-keep:])
    newest = complete[-1] if complete else ""
    # an incomplete copy newer than the newest complete one may be being written right now
    drop = [k for k in keys if (cid := k[len(PREFIX) :].split("/", 1)[0]) not in keep_ids and cid < newest]
    if drop:
        store.store.delete_many(drop)


# ---------------------------------------------------------------------- reading them back
def read_meta(store: ChunkStore, label: str, copy_id: str) -> CopyInfo:
    key = f"{PREFIX}{copy_id}/meta"
    doc = json.loads(store.keys.open_(store.store.get(key), object_aad(key)))
    if not isinstance(doc, dict) or not 0 <= int(doc.get("size", -1)) <= MAX_PLAINTEXT:
        raise IntegrityError(f"catalog copy {copy_id} in {store.store.url}: malformed meta")
    return CopyInfo(
        copy_id,
        label,
        str(doc["created_at"]),
        int(doc["size"]),
        int(doc["parts"]),
        str(doc["digest"]),
        int(doc.get("points", 0)),
        int(doc.get("schema_version", 0)),
        str(doc.get("host", "")),
    )


def read_copy(store: ChunkStore, info: CopyInfo) -> bytes:
    """The copy's SQLite file, authenticated and checked against its keyed hash."""
    pieces = []
    for n in range(info.parts):
        key = f"{PREFIX}{info.copy_id}/part-{n:04d}"
        pieces.append(store.keys.open_(store.store.get(key), object_aad(key)))
    try:
        raw = zstandard.ZstdDecompressor().decompress(b"".join(pieces), max_output_size=info.size)
    except zstandard.ZstdError as e:
        raise IntegrityError(f"catalog copy {info.copy_id}: does not decompress ({e})") from e
    if len(raw) != info.size or store.keys.chunk_id(raw) != info.digest:
        raise IntegrityError(f"catalog copy {info.copy_id}: content does not match its hash")
    return raw


def list_copies(stores: Iterable[tuple[str, ChunkStore]]) -> list[tuple[CopyInfo, ChunkStore]]:
    """Every readable copy meta of the stores, newest first (hot before cold on a tie)."""
    found: list[tuple[CopyInfo, ChunkStore]] = []
    for label, store in stores:
        for copy_id in copy_ids(store):
            with contextlib.suppress(IntegrityError, NotFound):
                found.append((read_meta(store, label, copy_id), store))
    return sorted(found, key=lambda c: c[0].copy_id, reverse=True)


def restore_copy(
    stores: Iterable[tuple[str, ChunkStore]], target: str | os.PathLike[str], *, replace_sound: bool = False
) -> RestoredCopy:
    """Put the newest sound copy of the catalog at ``target``; the old file is moved aside.

    A sound catalog at ``target`` is only replaced with ``replace_sound``. Raises ``NotFound``
    when no store holds a copy that passes every check (the caller falls back to a rebuild).
    """
    target = str(target)
    if os.path.exists(target) and not replace_sound and _sound(target) and not _empty(target):
        raise InvalidInput(f"catalog {target} is sound: refusing to replace it with a copy (use --force to do so)")
    skipped: list[str] = []
    for info, store in list_copies(stores):
        try:
            raw = read_copy(store, info)
        except DrsvcError as e:
            skipped.append(f"{info.store} copy {info.copy_id}: {e}")
            continue
        fd, tmp = tempfile.mkstemp(prefix=".drsvc-catalog-restore-", dir=os.path.dirname(os.path.abspath(target)))
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        problems = _problems(tmp)
        if problems:
            skipped.append(f"{info.store} copy {info.copy_id}: fails SQLite's check ({problems[0]})")
            os.unlink(tmp)
            continue
        aside = quarantine(target)
        os.replace(tmp, target)
        return RestoredCopy(info, target, str(aside) if aside else None, skipped)
    why = "; ".join(skipped) if skipped else "none found"
    raise NotFound(f"no sound catalog copy in the stores ({why}): rebuild it with `drsvc catalog rebuild`")


def _problems(path: str) -> list[str]:
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error as e:
        return [str(e)]
    try:
        return quick_check(conn)
    finally:
        conn.close()


def _sound(path: str) -> bool:
    return not _problems(path)


def _empty(path: str) -> bool:
    """A catalog that records no point: what any command creates where the lost one was (runbook
    catalog-lost: `points list` first, then `catalog restore`); replacing it loses nothing of worth
    (a verify or discover run on the empty catalog at most; the damaged-file rule keeps it aside)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        return conn.execute("SELECT 1 FROM points LIMIT 1").fetchone() is None
    except sqlite3.Error:
        return False
    finally:
        conn.close()
