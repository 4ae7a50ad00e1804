"""The one librados connection of a drsvc process, shared by the rados:// store and the volumes adapter.

``import rados`` happens only here (Debian's python3-rados; nothing usable is on PyPI), with an
install hint when it is missing. ``cluster()`` connects once per process and configuration and
caches the handle; ``ceph_errors(op)`` turns ``rados.Error`` into drsvc errors naming the operation.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from drsvc.errors import BackendError, MissingDependency, NotFound

INSTALL_HINT = "apt-get install python3-rados; make Debian's binding visible to this Python (see dev/setup)"

# Fail fast instead of hanging forever when the cluster is down (librados defaults to no timeout).
_CLIENT_CONF = {"client_mount_timeout": "15", "rados_mon_op_timeout": "30"}

_lock = threading.Lock()
_clusters: dict[tuple[Any, ...], Any] = {}


def rados_module() -> ModuleType:
    """Import and return the ``rados`` binding, or raise ``MissingDependency`` with the install hint."""
    try:
        import rados
    except ImportError as e:
        raise MissingDependency(f"the Ceph librados binding is not importable ({e}): {INSTALL_HINT}") from e
    return rados


def cluster(conffile: str | None = None, keyring: str | None = None, name: str | None = None) -> Any:
    """Return a connected ``rados.Rados`` for this config, connecting once per process and caching it.

    ``conffile`` defaults to ``$CEPH_CONF`` (else librados' search path), ``keyring`` to
    ``$CEPH_KEYRING`` (else what the conf says), ``name`` to ``client.admin``.
    """
    rados = rados_module()
    conffile = conffile or os.environ.get("CEPH_CONF") or None
    keyring = keyring or os.environ.get("CEPH_KEYRING") or None
    cache_key = (os.getpid(), conffile, keyring, name)
    with _lock:
        handle = _clusters.get(cache_key)
        if handle is not None and handle.state == "connected":
            return handle
        conf = dict(_CLIENT_CONF)
        if keyring:
            conf["keyring"] = keyring
        where = conffile or "the default ceph.conf search path"
        try:
            handle = rados.Rados(conffile=conffile or "", name=name, conf=conf)
            handle.connect()
        except rados.Error as e:
            raise BackendError(f"connect to Ceph using {where}: {e}") from e
        _clusters[cache_key] = handle
        return handle


def shutdown_all() -> None:
    """Close every cached connection of this process (tests, clean exit)."""
    with _lock:
        for handle in _clusters.values():
            with contextlib.suppress(Exception):
                handle.shutdown()
        _clusters.clear()


def open_ioctx(handle: Any, pool: str) -> Any:
    """Open an I/O context on an existing pool; a missing pool raises ``NotFound`` saying how to create it."""
    with ceph_errors(f"open pool {pool}"):
        exists = handle.pool_exists(pool)
    if not exists:
        raise NotFound(f"Ceph pool {pool!r} does not exist (create it: ceph osd pool create {pool})")
    with ceph_errors(f"open pool {pool}"):
        return handle.open_ioctx(pool)


@contextlib.contextmanager
def ceph_errors(op: str) -> Iterator[None]:
    """Translate ``rados.ObjectNotFound`` to ``NotFound``, other ``rados.Error`` to ``BackendError``."""
    rados = rados_module()
    try:
        yield
    except rados.ObjectNotFound as e:
        raise NotFound(f"{op}: not found ({e})") from e
    except rados.Error as e:
        raise BackendError(f"{op}: {e}") from e
