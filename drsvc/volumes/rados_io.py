"""librados helpers the ``rados://`` volume and its pool snapshots share: the URL scheme and name
rules, opening an ioctx, looking up a pool snapshot, draining a window of aio completions,
turning a negative return value into an error, and re-cutting a stream into fixed-size pieces.
"""

from __future__ import annotations

import collections
import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from drsvc import ceph
from drsvc.errors import DrsvcError, NotFound

SCHEME = "rados"
_POOL = re.compile(r"^[A-Za-z0-9_.-]+$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.@+=:-]+$")


def _rv_error(op: str, rv: int) -> DrsvcError:
    return ceph.rv_error(op, rv)


def _ioctx(pool: str, conn: dict[str, Any]) -> Any:
    return ceph.open_ioctx(ceph.cluster(**conn), pool)


def _lookup_snap(io: Any, pool: str, snap_name: str) -> int:
    rados = ceph.rados_module()
    try:
        return int(io.lookup_snap(snap_name).snap_id)
    except rados.ObjectNotFound as e:
        raise NotFound(f"pool snapshot {snap_name!r} not found in pool {pool}") from e
    except rados.Error as e:
        raise ceph.error(f"look up pool snapshot {snap_name!r} in pool {pool}", e) from e


def _ignore(*_args: Any) -> None:
    pass


def _drain(inflight: collections.deque[Any], wait: Callable[[Any], None]) -> None:
    """After an error: wait for every completion still in flight, ignoring results (never leak them)."""
    while inflight:
        # already failing: the first error is the one to report
        with contextlib.suppress(Exception):
            wait(inflight.popleft())


def _coalesce(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a stream of chunks into pieces of exactly ``size`` bytes (the last may be shorter).

    Chunks are gathered and joined once per piece (one copy of each byte, not three)."""
    parts: list[bytes] = []
    have = 0
    for chunk in chunks:
        if not chunk:
            continue
        if not parts and len(chunk) == size:
            yield bytes(chunk)
            continue
        parts.append(chunk)
        have += len(chunk)
        if have < size:
            continue
        joined = b"".join(parts)
        view = memoryview(joined)
        start = 0
        while have - start >= size:
            yield joined if start == 0 and have == size else bytes(view[start : start + size])
            start += size
        parts = [bytes(view[start:])] if start < have else []
        have -= start
    if parts:
        yield b"".join(parts)
