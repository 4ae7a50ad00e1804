"""Removing the objects of a namespace that the Python binding cannot address.

A desktop's processes name the objects of their namespace: librados takes any bytes as a name and
lets an object be placed by a *locator key* (found only by name and locator together). The pacific
binding takes only text for every object call and decodes every listed name as strict UTF-8, and
drsvc addresses objects by name alone: such an object cannot be backed up (its desktop's capture
fails, ``drsvc.volumes.rados_scan.list_names``), but a restore must still be able to make the
namespace equal its point, or the tenant could keep its own desktop from being restored (or a
purge from emptying a clone's namespace). ``remove`` lists the namespace through the C API, which
gives names and locators as bytes, and removes each such object by (name, locator).
"""

from __future__ import annotations

import ctypes
import errno
from typing import Any

from drsvc import ceph, deadline
from drsvc.errors import BackendError
from drsvc.volumes import rados_stamps


def _odd(name: bytes, locator: bytes) -> bool:
    """Whether the binding cannot address the object: a locator, or bytes that are not UTF-8."""
    if locator:
        return True
    try:
        name.decode()
    except UnicodeDecodeError:
        return True
    return False


def _list_odd(lib: Any, io: ctypes.c_void_p, what: str) -> list[tuple[bytes, bytes]]:
    """(name, locator) of every live object of the namespace the binding cannot address."""
    ctx = ctypes.c_void_p()
    rv = lib.rados_nobjects_list_open(io, ctypes.byref(ctx))
    if rv < 0:
        raise ceph.rv_error(f"list {what}", rv)
    found: list[tuple[bytes, bytes]] = []
    try:
        entry, key, nspace = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        sizes = (ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_size_t())
        while True:
            rv = lib.rados_nobjects_list_next2(
                ctx, *(ctypes.byref(p) for p in (entry, key, nspace)), *(ctypes.byref(s) for s in sizes)
            )
            if rv == -errno.ENOENT:  # the end of the listing
                return found
            if rv < 0:
                raise ceph.rv_error(f"list {what}", rv)
            name = ctypes.string_at(entry.value, sizes[0].value) if entry.value else b""
            locator = ctypes.string_at(key.value, sizes[1].value) if key.value else b""
            if _odd(name, locator):
                found.append((name, locator))
    finally:
        lib.rados_nobjects_list_close(ctx)


def _remove(lib: Any, io: ctypes.c_void_p, odd: list[tuple[bytes, bytes]], what: str) -> int:
    """Remove each (name, locator); how many were there. A name holding a NUL byte cannot be passed
    to the C API (it takes C strings) and fails the call, naming the object."""
    removed = 0
    for name, locator in odd:
        shown = name.decode("utf-8", "backslashreplace")
        if b"\0" in name or b"\0" in locator:
            raise ceph.NotUtf8Name(
                f"remove {what}/{shown!r}: its name or locator key holds a NUL byte, which librados' C API "
                "cannot name; remove it with a client of the C++ API"
            )
        deadline.check()
        lib.rados_ioctx_locator_set_key(io, locator or None)
        rv = lib.rados_remove(io, name)
        if rv == -errno.ENOENT:  # removed since it was listed
            continue
        if rv < 0:
            raise ceph.rv_error(f"remove {what}/{shown!r} (locator key {locator!r})", rv)
        removed += 1
    return removed


def remove(conn: dict[str, Any], pool: str, namespace: str, *, what: str, seen: list[str]) -> int:
    """Remove every live object of ``namespace`` the binding cannot address; how many were removed.

    ``seen``: such names the binding's listing met (shown escaped), for the error when librados'
    C API cannot be had here (``BackendError`` saying how to remove them by hand).
    """

    def run(lib: Any, io: ctypes.c_void_p) -> int:
        return _remove(lib, io, _list_odd(lib, io, what), what)

    removed = rados_stamps.on_namespace(conn, pool, namespace, None, run)
    if removed is None:
        shown = ", ".join(repr(n) for n in seen)
        raise BackendError(
            f"{what} holds objects the Python binding cannot address ({shown}: a locator key, or a name "
            f"that is not UTF-8) and librados' C API cannot be loaded here to remove them; remove them "
            f"by hand (rados -p {pool} -N {namespace} ls; rados ... rm NAME [--object-locator KEY]) and retry"
        )
    return removed
