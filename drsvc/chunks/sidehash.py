"""Hashing a stream on a thread of its own, beside the thread that consumes it.

A restore's consumer (the thread writing a volume into RADOS) used to hash every byte of the
stream itself before passing it on (~1 s per GiB). The hash releases the GIL, so the work can run
on the other core: pieces are handed over in batches of ``batch`` bytes to one worker, which
keeps their order; at most ``window`` batches wait, so memory stays bounded. The digest is asked
for once, at the end; an error of the worker surfaces there (or when the window is full).
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

MiB = 1 << 20


class Hasher(Protocol):
    def update(self, data: Any, /) -> Any: ...

    def hexdigest(self) -> str: ...


class SideHasher:
    """``update``/``hexdigest`` of ``hasher``, the hashing done on one worker thread, in order."""

    def __init__(self, hasher: Hasher, *, batch: int = 4 * MiB, window: int = 4) -> None:
        self.hasher = hasher
        self.batch = max(1, batch)
        self.window = max(1, window)
        self._parts: list[Any] = []
        self._size = 0
        self._pending: collections.deque[Future[None]] = collections.deque()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="drsvc-hash")

    def update(self, data: Any) -> None:
        """Hash ``data`` after everything given before (the caller must not change it afterwards)."""
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self.batch:
            self._flush()

    def hexdigest(self) -> str:
        """The digest of everything given; waits for the worker."""
        self._flush()
        while self._pending:
            self._pending.popleft().result()
        return self.hasher.hexdigest()

    def close(self) -> None:
        """Stop the worker (what is queued is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> SideHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _flush(self) -> None:
        if not self._parts:
            return
        parts, self._parts, self._size = self._parts, [], 0
        self._pending.append(self._pool.submit(self._hash, parts))
        while len(self._pending) > self.window:
            self._pending.popleft().result()

    def _hash(self, parts: list[Any]) -> None:
        for part in parts:
            self.hasher.update(part)
