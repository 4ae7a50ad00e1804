"""Removing objects of a RADOS namespace: every named one (``remove_many``), or only those a
clone restore's writer mark says it made (``remove_marked``); and taking that mark off (``unmark``).

Why a mark on the object (``WRITER_XATTR``) and not a record in the catalog: a restore writes
through an aio window, so whatever it records before a write, a kill -9 can land while that write
is in flight, and the name alone cannot say whether the object there is this restore's or another
writer's (an operator's, a racing restore's) that made this restore's exclusive create fail. The
mark is set in the very op that creates the object (``RadosVolume.write_objects(mark=...)``), so
after a kill between any two steps each recorded name is either absent, or present and marked
exactly when this restore created it. It costs nothing on the write (a few bytes in an op sent
anyway); the restore then records that every object is written and takes the marks off
(``unmark``: one small pipelined op per object, ~0.1 ms each in the lab), so the clone holds the
point's content and nothing more.

Cleanup after a kill (``remove_marked``) reads the mark and removes the object with
``assert_version`` on the version that read saw (librados has no compare-xattr in a write op): an
object rewritten in between is left.
"""

from __future__ import annotations

import collections
import errno
from collections.abc import Callable, Iterable
from typing import Any

from drsvc import ceph
from drsvc.volumes.base import WRITER_XATTR
from drsvc.volumes.rados_io import _drain, _rv_error

# what assert_version answers when the object changed since the version was read
_CHANGED = (errno.ERANGE, errno.EOVERFLOW)


def pipelined(
    names: Iterable[str], submit: Callable[[str], Any], what: str, tolerated: tuple[int, ...], window: int
) -> int:
    """``submit(name)`` (an aio op) for each name, ``window`` in flight; how many answered 0.
    A negative answer in ``tolerated`` (errno values) counts as nothing done; any other raises."""
    inflight: collections.deque[tuple[str, Any]] = collections.deque()
    done = 0
    try:
        for name in names:
            with ceph.ceph_errors(f"{what}/{name}"):
                inflight.append((name, submit(name)))
            if len(inflight) >= window:
                done += _reap(inflight, what, tolerated)
        while inflight:
            done += _reap(inflight, what, tolerated)
    finally:
        _drain(inflight, lambda entry: ceph.wait(entry[1]))
    return done


def _reap(inflight: collections.deque[tuple[str, Any]], what: str, tolerated: tuple[int, ...]) -> int:
    name, comp = inflight.popleft()
    rv = ceph.wait(comp).get_return_value()
    if rv >= 0:
        return 1
    if -rv in tolerated:
        return 0
    raise _rv_error(f"{what}/{name}", rv)


def remove_many(io: Any, url: str, names: Iterable[str], window: int) -> int:
    """Remove each named object, pipelined; return how many were there (absent ones are fine)."""
    # listed but already gone (deleted since a snap): fine
    return pipelined(names, io.aio_remove, f"remove {url}", (errno.ENOENT,), window)


def unmark(io: Any, url: str, names: Iterable[str], window: int) -> int:
    """Remove ``WRITER_XATTR`` from each named object, pipelined; return how many had it."""
    return pipelined(
        names,
        lambda name: io.aio_rmxattr(name, WRITER_XATTR),
        f"unmark {url}",
        (errno.ENOENT, errno.ENODATA),  # gone, or never marked: nothing to take off
        window,
    )


def remove_marked(io: Any, url: str, names: Iterable[str], mark: str) -> int:
    """Remove each named object that carries ``WRITER_XATTR`` = ``mark``, and no other; return how many.

    One name at a time on ``io`` (``get_last_version`` belongs to the context): this runs after a
    kill, not on a restore's path."""
    rados = ceph.rados_module()
    wanted = mark.encode()
    removed = 0
    for name in names:
        try:
            value = io.get_xattr(name, WRITER_XATTR)
        except (rados.ObjectNotFound, rados.NoData):
            continue  # never written, or another writer's object
        except rados.Error as e:
            raise ceph.error(f"read the writer mark of {url}/{name}", e) from e
        if bytes(value) != wanted:
            continue
        op = io.create_write_op()
        try:
            op.assert_version(io.get_last_version())
            op.remove()
            try:
                io.operate_write_op(op, name)
            except rados.ObjectNotFound:
                continue
            except rados.Error as e:
                if abs(getattr(e, "errno", 0) or 0) in _CHANGED:
                    continue  # rewritten since the mark was read: no longer only this restore's
                raise ceph.error(f"remove {url}/{name}", e) from e
        finally:
            op.release()
        removed += 1
    return removed
