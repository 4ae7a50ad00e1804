"""A local cache of one store's pack indexes, so a run does not GET every index again.

Pack indexes are immutable (a pack id is random, an index is written once, after its pack) and
small, and knowing what a packed store holds needs all of them: without a cache every process
(each ``drsvc tier``, each restore from the cold tier) fetches each one, one GET per pack. restic
keeps its repository's index files in a local cache for the same reason.

- **The store's listing stays the truth.** Only indexes the listing of ``index/`` names are looked
  up here; entries of indexes no longer listed (a pack pruned) are deleted at the next refresh.
- **Nothing cached is trusted.** An entry holds the sealed object exactly as fetched, and the pack
  directory opens it exactly as a fetched one (authenticated with the key it names, bound to its
  ``index/<pack-id>`` key, bounds checked). An entry that fails (tampered, truncated, another
  pack's index copied over it) is reported, deleted and fetched again from the store.
- **Bounded.** Past ``limit`` bytes the oldest entries (by the time they were written) go first;
  a cache that cannot be written (a full or read-only disk) only costs the GETs again.

Layout: ``<root>/<pack-id>``, one file per index (mode 0600 in a 0700 directory), written to a
temporary name and renamed, so a reader sees a whole entry or none.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from drsvc.chunks.layout import INDEX_STORED_MAX, is_pack_id


class IndexCache:
    """Sealed pack indexes of one store, as fetched, in one local directory."""

    def __init__(self, root: str | os.PathLike[str], limit: int) -> None:
        self.root = Path(root)
        self.limit = max(0, limit)

    def get(self, pack_id: str) -> bytes | None:
        """The cached sealed index of ``pack_id`` (not yet authenticated), or None."""
        if not is_pack_id(pack_id):
            return None
        try:
            with open(self.root / pack_id, "rb") as f:
                data = f.read(INDEX_STORED_MAX + 1)
        except OSError:
            return None
        return data if 0 < len(data) <= INDEX_STORED_MAX else None

    def put(self, pack_id: str, blob: bytes) -> None:
        """Keep the sealed index of ``pack_id`` as fetched (best effort: a cache)."""
        if not is_pack_id(pack_id) or not 0 < len(blob) <= min(INDEX_STORED_MAX, self.limit):
            return
        tmp = self.root / f".{pack_id}.{os.getpid()}.tmp"
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, self.root / pack_id)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def drop(self, pack_id: str) -> None:
        """Delete the entry of ``pack_id`` (it failed its check)."""
        if is_pack_id(pack_id):
            with contextlib.suppress(OSError):
                (self.root / pack_id).unlink()

    def keep_only(self, listed: Iterable[str]) -> None:
        """Delete the entries of indexes not in ``listed`` (the store's listing), then the oldest
        entries while the cache is past its limit."""
        keep = set(listed)
        entries: list[tuple[float, int, Path]] = []
        try:
            scan = list(os.scandir(self.root))
        except OSError:
            return
        for entry in scan:
            path = Path(entry.path)
            try:
                if not entry.is_file(follow_symlinks=False) or entry.name not in keep:
                    with contextlib.suppress(OSError):
                        path.unlink()  # pruned packs' indexes, leftovers of killed writes, anything else
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries, key=lambda e: e[0]):
            if total <= self.limit:
                break
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size
