"""``file://DIR``: objects as files under a directory (tests, single hosts, a mounted NAS).

Keys map to paths as given (``chunks/ab/ab12…`` → ``DIR/chunks/ab/ab12…``), so fan-out comes from
the key. Writes are atomic: a hidden temp file beside the target, fsync, rename, fsync of the
directory. A key cannot also be a "directory" of other keys here (``a`` and ``a/b``); drsvc's
layouts never do that. ``storage_class`` and ``retain_until`` are accepted and ignored.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from drsvc import faults, hostfs
from drsvc.errors import BackendError, InvalidInput, NotFound
from drsvc.storage.base import StoreBase, check_key, check_prefix, ordered_map, too_large


def from_url(url: str, **options: Any) -> FileStore:
    """Open ``file://DIR`` (``file:///abs/dir`` or ``file://relative/dir``)."""
    path = url[len("file://") :] if url.startswith("file://") else ""
    if not path or "?" in path or "#" in path:
        raise InvalidInput(f"malformed file store URL {url!r}: expected file:///absolute/dir")
    return FileStore(path, **options)


class FileStore(StoreBase):
    """An object store in a local directory."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True, workers: int = 4) -> None:
        self.root = Path(root).absolute()
        self._url = f"file://{self.root}"
        self._fsync = fsync
        self._workers = workers
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInput(f"file store {self._url}: {self.root} exists and is not a directory")

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(
        self, key: str, data: bytes, *, storage_class: str | None = None, retain_until: datetime | None = None
    ) -> None:
        """Write (or atomically replace) one object."""
        faults.point("mid-upload")
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            if self._fsync:
                dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            full = hostfs.os_error(self.root, e)  # a full or read-only disk: the operator's to fix
            raise full or BackendError(f"file store {self._url}: put {key}: {e.strerror or e}") from e

    def put_many(
        self,
        items: Iterable[tuple[str, bytes]],
        *,
        storage_class: str | None = None,
        retain_until: datetime | None = None,
    ) -> int:
        """Write many objects on a small thread pool (fsync latency overlaps); return the count."""

        def one(item: tuple[str, bytes]) -> None:
            self.put(item[0], item[1])

        return sum(1 for _ in ordered_map(one, items, workers=self._workers, window=4 * self._workers))

    def get(self, key: str, *, max_size: int | None = None) -> bytes:
        """Read one whole object; ``NotFound`` if it does not exist, ``ObjectTooLarge`` past ``max_size`` bytes."""
        path = self._path(key)
        try:
            if max_size is None:
                return path.read_bytes()
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > max_size:
                    raise too_large(self._url, key, size, max_size)
                data = f.read(max_size + 1)  # the file may have grown since the fstat
                if len(data) > max_size:
                    raise too_large(self._url, key, None, max_size)
                return data
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise NotFound(f"object {key} not found in {self._url}") from e
        except OSError as e:
            raise BackendError(f"file store {self._url}: get {key}: {e.strerror or e}") from e

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Read ``length`` bytes at ``start`` (fewer only at the end of the object)."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise NotFound(f"object {key} not found in {self._url}") from e
        except OSError as e:
            raise BackendError(f"file store {self._url}: get {key}: {e.strerror or e}") from e

    def get_many(self, keys: Iterable[str], *, max_size: int | None = None) -> Iterator[tuple[str, bytes]]:
        """Read many objects with thread-pool read-ahead, in input order."""
        return ordered_map(
            lambda k: (k, self.get(k, max_size=max_size)), keys, workers=self._workers, window=4 * self._workers
        )

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """Size of the object in bytes; raise ``NotFound`` if it does not exist."""
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError) as e:
            raise NotFound(f"object {key} not found in {self._url}") from e
        if not path.is_file():
            raise NotFound(f"object {key} not found in {self._url}")
        return st.st_size

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix`` (directory walk, any order)."""
        check_prefix(prefix)
        base_rel = prefix.rpartition("/")[0]
        base = self.root / base_rel if base_rel else self.root
        if not base.is_dir():
            return
        stack = [(base, base_rel)]
        while stack:
            d, rel = stack.pop()
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # temp files of in-flight writes
                key = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append((Path(entry.path), key))
                elif key.startswith(prefix):
                    yield key

    def delete(self, key: str) -> None:
        """Remove one object; a missing object is not an error."""
        try:
            self._path(key).unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            pass
        except OSError as e:
            raise BackendError(f"file store {self._url}: delete {key}: {e.strerror or e}") from e
