"""``rados://POOL[/PREFIX]``: objects in a RADOS pool (the hot tier's chunk store).

Object name = ``PREFIX/key``. The pool must already exist (``drsvc-hot`` in the lab). Batch calls
are pipelined with librados aio and a bounded window (count and bytes), so thousands of small
chunks never become one round trip each. Objects above ``MAX_OBJECT_BYTES`` are refused: the
OSD's ``osd_max_object_size`` defaults to 128 MiB and chunks are a few MiB at most.
``storage_class`` and ``retain_until`` are accepted and ignored (no classes or WORM in a pool).
"""

from __future__ import annotations

import collections
import errno
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from drsvc import ceph, faults
from drsvc.errors import BackendError, InvalidInput, NotFound
from drsvc.storage.base import StoreBase, check_key, check_prefix, split_store_url, too_large

MAX_OBJECT_BYTES = 90 * 1024 * 1024
_READ_SIZE = 4 * 1024 * 1024  # first aio read; larger objects are finished with sync reads


def _first_read(max_size: int | None) -> int:
    """Bytes asked by an object's first read: one block, or one byte past a smaller bound."""
    return _READ_SIZE if max_size is None else min(_READ_SIZE, max_size + 1)


_POOL = re.compile(r"^[A-Za-z0-9_.-]+$")


def from_url(url: str, **options: Any) -> RadosStore:
    """Open ``rados://POOL[/PREFIX]``; options: conffile, keyring, name, namespace, window."""
    pool, prefix = split_store_url(url, "rados", _POOL, "rados://POOL[/PREFIX]")
    return RadosStore(pool, prefix, **options)


class RadosStore(StoreBase):
    """An object store in one RADOS pool (optionally under a name prefix and in a namespace)."""

    def __init__(
        self,
        pool: str,
        prefix: str = "",
        *,
        conffile: str | None = None,
        keyring: str | None = None,
        name: str | None = None,
        namespace: str = "",
        window: int = 32,
        window_bytes: int = 128 * 1024 * 1024,
    ) -> None:
        self.pool = pool
        self.prefix = f"{prefix}/" if prefix else ""
        self._url = f"rados://{pool}/{prefix}" if prefix else f"rados://{pool}"
        self._window = max(1, window)
        self._window_bytes = window_bytes
        self._rados = ceph.rados_module()
        self._ioctx = ceph.open_ioctx(ceph.cluster(conffile, keyring, name), pool)
        if namespace:
            self._ioctx.set_namespace(namespace)

    def _oid(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _check_size(self, key: str, data: bytes) -> None:
        if len(data) > MAX_OBJECT_BYTES:
            raise InvalidInput(
                f"object {key} is {len(data)} bytes; {self._url} takes at most {MAX_OBJECT_BYTES} "
                "(RADOS objects are not meant to be large: split the data)"
            )

    def put(
        self, key: str, data: bytes, *, storage_class: str | None = None, retain_until: datetime | None = None
    ) -> None:
        """Write (or atomically replace) one object."""
        oid = self._oid(key)
        self._check_size(key, data)
        faults.point("mid-upload")
        with ceph.ceph_errors(f"rados put {self.pool}/{oid}"):
            self._ioctx.write_full(oid, bytes(data))

    def put_many(
        self,
        items: Iterable[tuple[str, bytes]],
        *,
        storage_class: str | None = None,
        retain_until: datetime | None = None,
    ) -> int:
        """Write many objects with ``aio_write_full``; at most ``window`` / ``window_bytes`` in flight."""
        inflight: collections.deque[tuple[str, int, Any]] = collections.deque()
        inflight_bytes = 0
        count = 0

        def reap() -> None:
            nonlocal inflight_bytes
            oid, size, comp = inflight.popleft()
            inflight_bytes -= size
            ceph.wait(comp)
            rv = comp.get_return_value()
            if rv < 0:
                raise ceph.rv_error(f"rados put {self.pool}/{oid}", rv)

        try:
            for key, data in items:
                oid = self._oid(key)
                self._check_size(key, data)
                while inflight and (len(inflight) >= self._window or inflight_bytes + len(data) > self._window_bytes):
                    reap()
                payload = bytes(data)
                faults.point("mid-upload")
                with ceph.ceph_errors(f"rados put {self.pool}/{oid}"):
                    comp = self._ioctx.aio_write_full(oid, payload)
                inflight.append((oid, len(payload), comp))
                inflight_bytes += len(payload)
                count += 1
            while inflight:
                reap()
        finally:
            # Never leave completions behind (an error above): wait, ignoring their results.
            for _, _, comp in inflight:
                ceph.wait(comp)
        return count

    def get(self, key: str, *, max_size: int | None = None) -> bytes:
        """Read one whole object; ``NotFound`` if it does not exist, ``ObjectTooLarge`` past ``max_size`` bytes."""
        oid = self._oid(key)
        try:
            with ceph.ceph_errors(f"rados get {self.pool}/{oid}"):
                data = self._ioctx.read(oid, _first_read(max_size), 0)
                return self._finish_read(key, oid, data, max_size)
        except NotFound as e:
            raise NotFound(f"object {key} not found in {self._url}") from e

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Read ``length`` bytes at ``start`` (fewer only at the end of the object)."""
        oid = self._oid(key)
        try:
            with ceph.ceph_errors(f"rados get {self.pool}/{oid}"):
                if length <= 0:
                    self._ioctx.stat(oid)
                    return b""
                return bytes(self._ioctx.read(oid, length, start))
        except NotFound as e:
            raise NotFound(f"object {key} not found in {self._url}") from e

    def _finish_read(self, key: str, oid: str, data: bytes, max_size: int | None) -> bytes:
        """The rest of an object whose first read filled its buffer: further reads up to ``max_size``.

        No stat first (a round trip per object): an object up to one read block is read at once,
        one byte past a smaller bound says it is too large; a larger one is stat'ed before reading
        on, so an object past the bound costs at most one read block of memory.
        """
        first = _first_read(max_size)
        if max_size is not None and len(data) > max_size:
            raise too_large(self._url, key, None, max_size)
        if len(data) < first:
            return data
        if max_size is not None:
            size, _mtime = self._ioctx.stat(oid)
            if size > max_size:
                raise too_large(self._url, key, int(size), max_size)
        parts = [data]
        offset = len(data)
        while True:
            more = self._ioctx.read(oid, _READ_SIZE, offset)
            parts.append(more)
            offset += len(more)
            if max_size is not None and offset > max_size:
                raise too_large(self._url, key, None, max_size)
            if len(more) < _READ_SIZE:
                return b"".join(parts)

    def get_many(self, keys: Iterable[str], *, max_size: int | None = None) -> Iterator[tuple[str, bytes]]:
        """Read many objects with ``aio_read``, ``window`` in flight, yielding in input order."""
        inflight: collections.deque[tuple[str, str, Any, dict[str, Any]]] = collections.deque()

        def submit(key: str) -> None:
            oid = self._oid(key)
            slot: dict[str, Any] = {}

            def done(_comp: Any, data: bytes | None) -> None:
                slot["data"] = data

            with ceph.ceph_errors(f"rados get {self.pool}/{oid}"):
                comp = self._ioctx.aio_read(oid, _first_read(max_size), 0, done)
            inflight.append((key, oid, comp, slot))

        def reap() -> tuple[str, bytes]:
            key, oid, comp, slot = inflight.popleft()
            ceph.wait(comp)
            rv = comp.get_return_value()
            if rv == -errno.ENOENT:
                raise NotFound(f"object {key} not found in {self._url}")
            if rv < 0:
                raise ceph.rv_error(f"rados get {self.pool}/{oid}", rv)
            if slot.get("data") is None:
                raise BackendError(f"rados get {self.pool}/{oid}: no data ({rv})")
            # rv is the length read: the binding hands back its whole buffer for an empty object
            data = slot["data"][:rv]
            with ceph.ceph_errors(f"rados get {self.pool}/{oid}"):
                return key, self._finish_read(key, oid, data, max_size)

        try:
            for key in keys:
                submit(key)
                if len(inflight) >= self._window:
                    yield reap()
            while inflight:
                yield reap()
        finally:
            for _, _, comp, _ in inflight:
                ceph.wait(comp)

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """Size of the object in bytes; raise ``NotFound`` if it does not exist."""
        oid = self._oid(key)
        try:
            with ceph.ceph_errors(f"rados stat {self.pool}/{oid}"):
                size, _mtime = self._ioctx.stat(oid)
        except NotFound as e:
            raise NotFound(f"object {key} not found in {self._url}") from e
        return int(size)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix`` (``list_objects`` of the pool, filtered)."""
        full = self.prefix + check_prefix(prefix)
        cut = len(self.prefix)
        with ceph.ceph_errors(f"rados list {self.pool}/{full}"):
            for obj in self._ioctx.list_objects():
                if obj.key.startswith(full):
                    yield obj.key[cut:]

    def delete(self, key: str) -> None:
        """Remove one object; a missing object is not an error."""
        oid = self._oid(key)
        try:
            with ceph.ceph_errors(f"rados delete {self.pool}/{oid}"):
                self._ioctx.remove_object(oid)
        except NotFound:
            pass

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove many objects with ``aio_remove``, pipelined; missing ones are fine."""
        inflight: collections.deque[tuple[str, Any]] = collections.deque()
        count = 0

        def reap() -> None:
            oid, comp = inflight.popleft()
            ceph.wait(comp)
            rv = comp.get_return_value()
            if rv < 0 and rv != -errno.ENOENT:
                raise ceph.rv_error(f"rados delete {self.pool}/{oid}", rv)

        try:
            for key in keys:
                oid = self._oid(key)
                with ceph.ceph_errors(f"rados delete {self.pool}/{oid}"):
                    inflight.append((oid, self._ioctx.aio_remove(oid)))
                count += 1
                if len(inflight) >= self._window:
                    reap()
            while inflight:
                reap()
        finally:
            for _, comp in inflight:
                ceph.wait(comp)
        return count

    def close(self) -> None:
        """Close the I/O context (the cluster connection stays cached for the process)."""
        ioctx, self._ioctx = self._ioctx, None
        if ioctx is not None:
            ioctx.close()
