"""Object stamps (size, version) and whole metadata at a pool snapshot through librados' C API,
many ops in flight.

Incremental capture compares every object's RADOS user version with the parent point's
(``drsvc.volumes.rados_meta`` says why the version). The Python binding has no completion-level
version (``rados_aio_get_version``), so ``MetadataScan`` reads each version with a synchronous
stat on a thread of its own. Measured in the lab at a pool snapshot (7,223 objects): 4 to 64
threads did 5,000-6,000 stats/s, no more than one thread, while aio stats on one thread did
~20,000/s. An unchanged backup spent most of its volume time there.

A full capture needs more than stamps: every object's xattrs and omap too. The binding has no
compound read op with a stat or xattrs in it, so ``MetadataScan`` spends three OSD ops per object
(a stat and a getxattrs on its threads, an omap read in an aio window), and a full backup of the
1 GiB desktop waited ~2 s for them before reading any data. ``metadata`` asks each object for all
three in **one** aio read op (stat + getxattrs + the first omap page; the rare longer omap is read
on in pages), on one thread: a third of the OSD ops.

This module calls the C API through ``ctypes`` (which releases the GIL in every call): a
connection of its own per process and configuration (the conf file, keyring, client name and
timeouts of ``drsvc.ceph``: every op has the same deadline), an I/O context per scan on the
namespace at the snapshot, ops in a bounded window, and each completion's return value and
version. When librados cannot be loaded this way (no ``librados.so.2``, a symbol missing, the
connection refused), ``stamps`` and ``metadata`` return None and the caller uses the threads:
same results, slower.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from drsvc import ceph, deadline
from drsvc.volumes.base import MetadataBudget, VolumeObject, metadata_bytes

WINDOW = 256  # ops in flight: enough to keep the OSDs busy; a few KiB of buffers (and one omap page) each
OMAP_PAGE = 1000  # omap keys asked by an object's first op (as ``rados_meta``)
_T = TypeVar("_T")

_lock = threading.Lock()
_lib: Any = None
_lib_tried = False
_clusters: dict[tuple[Any, ...], ctypes.c_void_p] = {}


def _load() -> Any:
    """librados through ctypes with the signatures used here, or None when it cannot be had."""
    global _lib, _lib_tried
    if _lib_tried:
        return _lib
    _lib_tried = True
    path = ctypes.util.find_library("rados") or "librados.so.2"
    try:
        lib = ctypes.CDLL(path)
        vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        pvp = ctypes.POINTER(ctypes.c_void_p)
        sigs: dict[str, tuple[Any, list[Any]]] = {
            "rados_create2": (i, [pvp, cp, cp, ctypes.c_uint64]),
            "rados_conf_read_file": (i, [vp, cp]),
            "rados_conf_set": (i, [vp, cp, cp]),
            "rados_connect": (i, [vp]),
            "rados_shutdown": (None, [vp]),
            "rados_ioctx_create": (i, [vp, cp, pvp]),
            "rados_ioctx_destroy": (None, [vp]),
            "rados_ioctx_set_namespace": (None, [vp, cp]),
            "rados_ioctx_snap_set_read": (None, [vp, ctypes.c_uint64]),
            "rados_aio_create_completion": (i, [vp, vp, vp, pvp]),
            "rados_aio_stat": (i, [vp, cp, vp, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_long)]),
            "rados_aio_wait_for_complete": (i, [vp]),
            "rados_aio_get_return_value": (i, [vp]),
            "rados_aio_get_version": (ctypes.c_uint64, [vp]),
            "rados_aio_release": (None, [vp]),
        }
        pi, psz = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_size_t)
        sigs |= {  # compound read ops (``metadata``)
            "rados_create_read_op": (vp, []),
            "rados_release_read_op": (None, [vp]),
            "rados_read_op_stat": (None, [vp, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_long), pi]),
            "rados_read_op_getxattrs": (None, [vp, pvp, pi]),
            "rados_read_op_omap_get_vals2": (
                None,
                [vp, cp, cp, ctypes.c_uint64, pvp, ctypes.POINTER(ctypes.c_ubyte), pi],
            ),
            "rados_aio_read_op_operate": (i, [vp, vp, vp, cp, i]),
            "rados_read_op_operate": (i, [vp, vp, cp, i]),
            "rados_getxattrs_next": (i, [vp, ctypes.POINTER(ctypes.c_char_p), pvp, psz]),
            "rados_getxattrs_end": (None, [vp]),
            "rados_omap_get_next2": (i, [vp, pvp, pvp, psz, psz]),
            "rados_omap_get_end": (None, [vp]),
        }
        sigs |= {  # listing and removing by bytes (``drsvc.volumes.rados_odd``)
            "rados_nobjects_list_open": (i, [vp, pvp]),
            "rados_nobjects_list_next2": (i, [vp, pvp, pvp, pvp, psz, psz, psz]),
            "rados_nobjects_list_close": (None, [vp]),
            "rados_ioctx_locator_set_key": (None, [vp, cp]),
            "rados_remove": (i, [vp, cp]),
        }
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
    except (OSError, AttributeError):
        return None
    _lib = lib
    return lib


def _connect(lib: Any, conn: dict[str, Any]) -> ctypes.c_void_p | None:
    """The process's C-level connection for this configuration (made once), or None if refused."""
    conffile = conn.get("conffile") or os.environ.get("CEPH_CONF") or None
    keyring = conn.get("keyring") or os.environ.get("CEPH_KEYRING") or None
    name = conn.get("name") or "client.admin"
    limits = ceph.timeouts()
    key = (os.getpid(), conffile, keyring, name, limits)
    handle = _clusters.get(key)
    if handle is not None:
        return handle
    handle = ctypes.c_void_p()
    if lib.rados_create2(ctypes.byref(handle), b"ceph", name.encode(), 0) < 0:
        return None
    settings = limits.conf()
    if keyring:
        settings["keyring"] = keyring
    ok = lib.rados_conf_read_file(handle, conffile.encode() if conffile else None) >= 0
    ok = ok and all(lib.rados_conf_set(handle, k.encode(), v.encode()) >= 0 for k, v in settings.items())
    if not ok or lib.rados_connect(handle) < 0:
        lib.rados_shutdown(handle)
        return None
    _clusters[key] = handle
    return handle


@atexit.register
def _shutdown() -> None:
    with _lock:
        for handle in _clusters.values():
            _lib.rados_shutdown(handle)
        _clusters.clear()


def stamps(
    conn: dict[str, Any], pool: str, namespace: str, snap_id: int, names: list[str], *, what: str
) -> list[VolumeObject] | None:
    """Name, size, version and mtime of each name present at snapshot ``snap_id``, in input order
    (absent names left out); None when the C API is not available here (use ``MetadataScan``).

    ``what`` names the scan in errors (``rados://pool/ns at snapshot S``).
    """
    return on_namespace(conn, pool, namespace, snap_id, lambda lib, io: _scan(lib, io, names, what))


def metadata(
    conn: dict[str, Any], pool: str, namespace: str, snap_id: int, names: list[str], *, what: str
) -> list[VolumeObject] | None:
    """As ``stamps``, with each object's xattrs and omap too (what ``MetadataScan.objects`` gives):
    one compound aio op per object; None when the C API is not available here."""
    return on_namespace(conn, pool, namespace, snap_id, lambda lib, io: _MetaScan(lib, io, what).run(names))


def on_namespace(
    conn: dict[str, Any], pool: str, namespace: str, snap_id: int | None, scan: Callable[[Any, ctypes.c_void_p], _T]
) -> _T | None:
    """``scan(lib, io)`` on an I/O context of the namespace at snapshot ``snap_id`` (None: live);
    None without the C API."""
    with _lock:
        lib = _load()
        handle = _connect(lib, conn) if lib is not None else None
    if handle is None:
        return None
    io = ctypes.c_void_p()
    rv = lib.rados_ioctx_create(handle, pool.encode(), ctypes.byref(io))
    if rv < 0:
        raise ceph.rv_error(f"open pool {pool}", rv)
    try:
        lib.rados_ioctx_set_namespace(io, namespace.encode())
        if snap_id is not None:
            lib.rados_ioctx_snap_set_read(io, snap_id)
        return scan(lib, io)
    finally:
        lib.rados_ioctx_destroy(io)


_Inflight = tuple[str, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_long]


def _scan(lib: Any, io: ctypes.c_void_p, names: list[str], what: str) -> list[VolumeObject]:
    inflight: collections.deque[_Inflight] = collections.deque()
    out: list[VolumeObject] = []

    def reap() -> None:
        name, comp, size, mtime = inflight.popleft()
        try:
            lib.rados_aio_wait_for_complete(comp)  # bounded: every op has rados_osd_op_timeout
            rv = lib.rados_aio_get_return_value(comp)
            version = int(lib.rados_aio_get_version(comp))
        finally:
            lib.rados_aio_release(comp)
        if rv == -errno.ENOENT:
            return
        if rv < 0:
            raise ceph.rv_error(f"stat {what}/{name}", rv)
        out.append(VolumeObject(name, int(size.value), version=version, mtime=int(mtime.value)))

    try:
        for name in names:
            deadline.check()  # a capture's: a million stats take their time
            if len(inflight) >= WINDOW:
                reap()
            comp = ctypes.c_void_p()
            rv = lib.rados_aio_create_completion(None, None, None, ctypes.byref(comp))
            if rv < 0:
                raise ceph.rv_error(f"stat {what}/{name}", rv)
            size, mtime = ctypes.c_uint64(), ctypes.c_long()  # written by librados when the op ends
            rv = lib.rados_aio_stat(io, name.encode(), comp, ctypes.byref(size), ctypes.byref(mtime))
            if rv < 0:
                lib.rados_aio_release(comp)
                raise ceph.rv_error(f"stat {what}/{name}", rv)
            inflight.append((name, comp, size, mtime))
        while inflight:
            reap()
    finally:
        while inflight:  # an error above: the buffers must outlive every op still in flight
            _, comp, _, _ = inflight.popleft()
            lib.rados_aio_wait_for_complete(comp)
            lib.rados_aio_release(comp)
    return out


class _MetaOp:
    """One object's compound read op in flight, and the outputs librados writes when it ends."""

    __slots__ = ("comp", "more", "mtime", "name", "omap", "op", "rvals", "size", "xattrs")

    def __init__(self, lib: Any, name: str) -> None:
        self.name = name
        self.op = ctypes.c_void_p(lib.rados_create_read_op())
        self.comp = ctypes.c_void_p()
        self.size, self.mtime = ctypes.c_uint64(), ctypes.c_long()
        self.xattrs, self.omap = ctypes.c_void_p(), ctypes.c_void_p()
        self.more = ctypes.c_ubyte()
        self.rvals = (ctypes.c_int(), ctypes.c_int(), ctypes.c_int())  # stat, getxattrs, omap
        lib.rados_read_op_stat(self.op, ctypes.byref(self.size), ctypes.byref(self.mtime), ctypes.byref(self.rvals[0]))
        lib.rados_read_op_getxattrs(self.op, ctypes.byref(self.xattrs), ctypes.byref(self.rvals[1]))
        lib.rados_read_op_omap_get_vals2(
            self.op, b"", b"", OMAP_PAGE, ctypes.byref(self.omap), ctypes.byref(self.more), ctypes.byref(self.rvals[2])
        )

    def release(self, lib: Any) -> None:
        """Free the iterators (once the op ended), the completion and the op."""
        if self.xattrs:
            lib.rados_getxattrs_end(self.xattrs)
        if self.omap:
            lib.rados_omap_get_end(self.omap)
        if self.comp:
            lib.rados_aio_release(self.comp)
        lib.rados_release_read_op(self.op)


class _MetaScan:
    """``metadata``'s scan: compound ops in a window of ``WINDOW``, results in input order."""

    def __init__(self, lib: Any, io: ctypes.c_void_p, what: str) -> None:
        self.lib = lib
        self.io = io
        self.what = what
        self.budget = MetadataBudget(what)

    def run(self, names: list[str]) -> list[VolumeObject]:
        lib = self.lib
        inflight: collections.deque[_MetaOp] = collections.deque()
        out: list[VolumeObject] = []
        try:
            for name in names:
                deadline.check()  # a capture's: a million objects' metadata take their time
                if len(inflight) >= WINDOW:
                    self._reap(inflight.popleft(), out)
                one = _MetaOp(lib, name)
                inflight.append(one)  # released by the reap or the cleanup below, whatever happens next
                if lib.rados_aio_create_completion(None, None, None, ctypes.byref(one.comp)) < 0:
                    raise ceph.rv_error(f"read metadata of {self.what}/{name}", -errno.ENOMEM)
                rv = lib.rados_aio_read_op_operate(one.op, self.io, one.comp, name.encode(), 0)
                if rv < 0:
                    lib.rados_aio_release(one.comp)
                    one.comp = ctypes.c_void_p()
                    raise ceph.rv_error(f"read metadata of {self.what}/{name}", rv)
            while inflight:
                self._reap(inflight.popleft(), out)
        finally:
            while inflight:  # an error above: the outputs must outlive every op still in flight
                one = inflight.popleft()
                if one.comp:
                    lib.rados_aio_wait_for_complete(one.comp)
                one.release(lib)
        return out

    def _reap(self, one: _MetaOp, out: list[VolumeObject]) -> None:
        lib = self.lib
        try:
            lib.rados_aio_wait_for_complete(one.comp)  # bounded: every op has rados_osd_op_timeout
            rv = lib.rados_aio_get_return_value(one.comp)
            version = int(lib.rados_aio_get_version(one.comp))
            if rv == -errno.ENOENT:
                return
            rv = rv if rv < 0 else min([0, *(r.value for r in one.rvals)])
            if rv < 0:
                raise ceph.rv_error(f"read metadata of {self.what}/{one.name}", rv)
            xattrs = self._xattrs(one.xattrs)
            omap = self._omap(one.omap)
            more = bool(one.more.value)
        finally:
            one.release(lib)
        if more:
            omap = self._omap_rest(one.name, omap, metadata_bytes(xattrs))
        self.budget.take(one.name, xattrs, omap)
        out.append(
            VolumeObject(one.name, int(one.size.value), xattrs, omap, mtime=int(one.mtime.value), version=version)
        )

    def _xattrs(self, it: ctypes.c_void_p) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        name, val, n = ctypes.c_char_p(), ctypes.c_void_p(), ctypes.c_size_t()
        while True:
            rv = self.lib.rados_getxattrs_next(it, ctypes.byref(name), ctypes.byref(val), ctypes.byref(n))
            if rv < 0:
                raise ceph.rv_error(f"read xattrs of {self.what}", rv)
            if name.value is None:
                return out
            key = ceph.text(name.value, f"read xattrs of {self.what}")
            out[key] = ctypes.string_at(val, n.value) if n.value else b""

    def _omap(self, it: ctypes.c_void_p) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        key, val, kn, vn = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_size_t()
        while True:
            rv = self.lib.rados_omap_get_next2(
                it, ctypes.byref(key), ctypes.byref(val), ctypes.byref(kn), ctypes.byref(vn)
            )
            if rv < 0:
                raise ceph.rv_error(f"read omap of {self.what}", rv)
            if not key.value:
                return out
            name = ceph.text(ctypes.string_at(key, kn.value), f"read omap of {self.what}")
            out[name] = ctypes.string_at(val, vn.value) if vn.value else b""

    def _omap_rest(self, name: str, omap: dict[str, bytes], held: int) -> dict[str, bytes]:
        """Pages after the first of a long omap, synchronously (rare: more than ``OMAP_PAGE`` keys);
        ``held``: the object's xattr bytes, counted with its omap against the budget page by page."""
        lib = self.lib
        held += metadata_bytes(omap)
        while True:
            self.budget.check(name, held)
            op = ctypes.c_void_p(lib.rados_create_read_op())
            it, more, prval = ctypes.c_void_p(), ctypes.c_ubyte(), ctypes.c_int()
            try:
                lib.rados_read_op_omap_get_vals2(
                    op, max(omap).encode(), b"", OMAP_PAGE, ctypes.byref(it), ctypes.byref(more), ctypes.byref(prval)
                )
                rv = lib.rados_read_op_operate(op, self.io, name.encode(), 0)
                rv = rv if rv < 0 else prval.value
                if rv < 0:
                    raise ceph.rv_error(f"read omap of {self.what}/{name}", rv)
                page = self._omap(it)
                omap.update(page)
                held += metadata_bytes(page)
            finally:
                if it:
                    lib.rados_omap_get_end(it)
                lib.rados_release_read_op(op)
            if not more.value:
                return omap
