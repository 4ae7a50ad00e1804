"""Listing by bytes, and removing the objects of a namespace that the Python binding cannot address.

A desktop's processes name the objects of their namespace: librados takes any bytes as a name and
lets an object be placed by a *locator key* (found only by name and locator together). The pacific
binding takes only text for every object call and decodes every listed name as strict UTF-8, and
drsvc addresses objects by name alone: such an object cannot be backed up (its desktop's capture
fails, ``drsvc.volumes.rados_scan.list_names``), but a restore must still be able to make the
namespace equal its point, or the tenant could keep its own desktop from being restored (or a
purge from emptying a clone's namespace). ``remove`` lists the namespace through the C API, which
gives names and locators as bytes, and removes each such object by (name, locator).
``names_by_namespace`` is a batch's pool listing by bytes, for when the binding's fails on such a name.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Container, Iterator
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


def _entries(
    lib: Any, io: ctypes.c_void_p, what: str, wanted: Container[bytes] | None = None
) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(name, locator, namespace) of every object the I/O context lists, as bytes (b"" when none);
    only those of the ``wanted`` namespaces when given (the others' names are never copied)."""
    ctx = ctypes.c_void_p()
    rv = lib.rados_nobjects_list_open(io, ctypes.byref(ctx))
    if rv < 0:
        raise ceph.rv_error(f"list {what}", rv)
    try:
        entry, key, nspace = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        sizes = (ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_size_t())
        refs = (*(ctypes.byref(p) for p in (entry, key, nspace)), *(ctypes.byref(n) for n in sizes))
        while True:
            rv = lib.rados_nobjects_list_next2(ctx, *refs)
            if rv == -errno.ENOENT:  # the end of the listing
                return
            if rv < 0:
                raise ceph.rv_error(f"list {what}", rv)
            ns = ctypes.string_at(nspace.value, sizes[2].value) if nspace.value else b""
            if wanted is not None and ns not in wanted:
                continue
            yield (
                ctypes.string_at(entry.value, sizes[0].value) if entry.value else b"",
                ctypes.string_at(key.value, sizes[1].value) if key.value else b"",
                ns,
            )
    finally:
        lib.rados_nobjects_list_close(ctx)


def _list_odd(lib: Any, io: ctypes.c_void_p, what: str) -> list[tuple[bytes, bytes]]:
    """(name, locator) of every live object of the namespace the binding cannot address."""
    return [(name, locator) for name, locator, _ in _entries(lib, io, what) if _odd(name, locator)]


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


ALL_NAMESPACES = "\x01"  # librados' LIBRADOS_ALL_NSPACES


def names_by_namespace(
    conn: dict[str, Any], pool: str, namespaces: set[str], *, bound: int
) -> dict[str, list[str]] | None:
    """The object names of each of ``namespaces`` from one listing of ``pool`` through the C API,
    sorted; None when the C API cannot be had here (the caller lists through the binding).

    A namespace is left out of the result when it holds an object the binding cannot address (its
    desktop then lists its own namespace and fails there, naming it) or more than ``bound``
    objects. The binding's listing of the pool raises at the first name that is not UTF-8 in *any*
    namespace, so one tenant's name cost every batch of the pool its one shared listing (each of
    its desktops then scanned the pool for its own); this listing takes names as bytes.
    """
    found: dict[bytes, set[str]] = {ns.encode(): set() for ns in namespaces}
    one = next(iter(namespaces)) if len(namespaces) == 1 else ALL_NAMESPACES

    def scan(lib: Any, io: ctypes.c_void_p) -> bool:
        for name, locator, nspace in _entries(lib, io, f"pool {pool}", found):
            names = found.get(nspace)
            if names is None:
                continue  # dropped
            if _odd(name, locator) or len(names) >= bound:
                del found[nspace]
                continue
            names.add(name.decode())
        return True

    if rados_stamps.on_namespace(conn, pool, one, None, scan) is None:
        return None
    return {ns.decode(): sorted(names) for ns, names in found.items()}
