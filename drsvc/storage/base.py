"""The object store interface every backend implements, and the helpers backends share.

Keys are ``/``-separated relative names (``chunks/ab/ab12…``); each segment is non-empty, does
not start with ``.`` and holds no NUL. Backends stay thin: they implement single-object calls
and, where the client library allows it, pipelined ``put_many`` / ``get_many`` /
``delete_many``, and ``get_range`` (one byte range of an object: packs on the cold tier are read
that way); ``StoreBase`` supplies sequential fallbacks and ``ordered_map`` bounded
thread-pool pipelining for backends whose library is blocking.

``max_size`` on ``get``/``get_many``: what a store holds is hostile input, so a reader that knows
how large an object at a place can be passes that bound, and the backend refuses a larger object
with ``ObjectTooLarge`` (an ``IntegrityError``) before it holds more than ``max_size`` bytes of it
plus one read block (file: ``fstat``; RADOS: reads of 4 MiB up to the bound; S3: the GET's
``Content-Length``, before the body is read).

Parameters meant for the S3 cold tier:

- ``storage_class``: the S3 storage class (``STANDARD_IA``, ``GLACIER`` …). file:// and rados://
  accept and ignore it (a RADOS pool has no classes).
- ``retain_until``: object-lock retention (WORM) until that UTC instant. file:// and rados://
  accept and ignore it: neither can enforce immutability, so recording it would only pretend.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Protocol, TypeVar, runtime_checkable

from drsvc.errors import InvalidInput, ObjectTooLarge

T = TypeVar("T")
R = TypeVar("R")

_SEGMENT = re.compile(r"^[^/\x00.][^/\x00]*$")


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-ish blobs addressed by ``/``-separated keys."""

    @property
    def url(self) -> str:
        """The URL this store was opened from (no credentials)."""
        ...

    def put(
        self, key: str, data: bytes, *, storage_class: str | None = None, retain_until: datetime | None = None
    ) -> None:
        """Write (or atomically replace) one object."""
        ...

    def put_many(
        self,
        items: Iterable[tuple[str, bytes]],
        *,
        storage_class: str | None = None,
        retain_until: datetime | None = None,
    ) -> int:
        """Write many objects pipelined, consuming ``items`` lazily (bounded window); return the count."""
        ...

    def get(self, key: str, *, max_size: int | None = None) -> bytes:
        """Read one whole object; ``NotFound`` if it does not exist, ``ObjectTooLarge`` past ``max_size`` bytes."""
        ...

    def get_many(self, keys: Iterable[str], *, max_size: int | None = None) -> Iterator[tuple[str, bytes]]:
        """Read many objects pipelined with bounded read-ahead, yielding ``(key, data)`` in input order
        (``max_size``: as ``get``, for each)."""
        ...

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Read ``length`` bytes at ``start`` of one object (fewer only at its end); ``NotFound`` if absent."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix`` (batched listing, any order)."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object; a missing object is not an error."""
        ...

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove many objects (missing ones are fine); return how many keys were processed."""
        ...

    def size(self, key: str) -> int:
        """Size of the object in bytes; raise ``NotFound`` if it does not exist."""
        ...

    def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...


def too_large(url: str, key: str, size: int | None, limit: int) -> ObjectTooLarge:
    """The error for an object past the ``max_size`` its reader allows (``size`` None: not known)."""
    what = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    return ObjectTooLarge(
        f"object {key} in {url} is {what}, more than the {limit} drsvc ever writes there (refused unread)",
        key=key,
        size=size,
        limit=limit,
    )


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise ``InvalidInput``."""
    if not isinstance(key, str) or not key or not all(_SEGMENT.match(s) for s in key.split("/")):
        raise InvalidInput(f"invalid object key {key!r}: '/'-separated non-empty segments, none starting with '.'")
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid listing prefix (may be empty or end in ``/``)."""
    if prefix and (prefix.startswith("/") or "\x00" in prefix or "//" in prefix):
        raise InvalidInput(f"invalid key prefix {prefix!r}")
    return prefix


def split_store_url(url: str, scheme: str, name: re.Pattern[str], shape: str) -> tuple[str, str]:
    """``SCHEME://NAME[/PREFIX]`` -> (name, prefix), or ``InvalidInput`` saying the expected ``shape``."""
    rest = url[len(scheme) + 3 :] if url.startswith(f"{scheme}://") else ""
    first, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not first or not name.match(first) or "?" in rest or "#" in rest:
        raise InvalidInput(f"malformed {scheme} store URL {url!r}: expected {shape}")
    if prefix:
        try:
            check_key(prefix)
        except InvalidInput as e:
            raise InvalidInput(f"malformed {scheme} store URL {url!r}: bad prefix {prefix!r}") from e
    return first, prefix


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 4,
    window: int = 16,
    inline: Callable[[T], bool] | None = None,
) -> Iterator[R]:
    """Apply ``fn`` on a thread pool, yielding results in input order with at most ``window`` in flight.

    ``items`` is consumed lazily, so memory stays bounded by the window. Exceptions surface at the
    position of the item that raised; leaving the generator early cancels what is queued. Items
    for which ``inline`` says so are done in the caller's thread (work too small for a hand-off:
    a thread pool costs tens of microseconds per item).
    """
    window = max(1, window)
    pending: collections.deque[Future[R]] = collections.deque()
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="drsvc-io")
    try:
        for item in items:
            if inline is not None and inline(item):
                done: Future[R] = Future()
                try:
                    done.set_result(fn(item))
                except Exception as e:
                    done.set_exception(e)
                pending.append(done)
            else:
                pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class StoreBase:
    """Sequential fallbacks for the batch calls; backends override them when they can pipeline."""

    _url: str

    @property
    def url(self) -> str:
        """The URL this store was opened from (no credentials)."""
        return self._url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._url}>"

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(
        self, key: str, data: bytes, *, storage_class: str | None = None, retain_until: datetime | None = None
    ) -> None:
        """Write (or atomically replace) one object."""
        raise NotImplementedError

    def get(self, key: str, *, max_size: int | None = None) -> bytes:
        """Read one whole object; ``NotFound`` if it does not exist, ``ObjectTooLarge`` past ``max_size`` bytes."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove one object; a missing object is not an error."""
        raise NotImplementedError

    def put_many(
        self,
        items: Iterable[tuple[str, bytes]],
        *,
        storage_class: str | None = None,
        retain_until: datetime | None = None,
    ) -> int:
        """Write many objects (sequential fallback); return the count."""
        n = 0
        for key, data in items:
            self.put(key, data, storage_class=storage_class, retain_until=retain_until)
            n += 1
        return n

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Read part of one object (fallback: the whole object, sliced)."""
        return self.get(key)[start : start + length]

    def get_many(self, keys: Iterable[str], *, max_size: int | None = None) -> Iterator[tuple[str, bytes]]:
        """Read many objects in input order (sequential fallback)."""
        for key in keys:
            yield key, self.get(key, max_size=max_size)

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove many objects (sequential fallback); return how many keys were processed."""
        n = 0
        for key in keys:
            self.delete(key)
            n += 1
        return n

    def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
