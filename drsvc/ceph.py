"""The one librados connection of a drsvc process, shared by the rados:// store and the volumes adapter.

``import rados`` happens only here (Debian's python3-rados; nothing usable is on PyPI), with an
install hint when it is missing. ``cluster()`` connects once per process and configuration and
caches the handle; ``ceph_errors(op)`` turns ``rados.Error`` into drsvc errors naming the operation.

**aio completions: always ``wait(completion)``, never ``wait_for_complete()``.** The pacific binding
hands librados a *borrowed* pointer to the Python ``Completion`` as the callback argument; the
only thing keeping a completion with a callback (``aio_stat``, ``aio_read``, any ``oncomplete``)
alive is its Ioctx's list of pending completions, and the completion points back at the Ioctx.
``wait_for_complete()`` returns when the op is done but *before* librados' finisher thread has run
the callback. Drop the completion and the Ioctx then, and the pair is an unreachable reference
cycle: the next cyclic garbage collection frees them, and the finisher thread calls back into
freed memory (a segfault in a thread with no Python frame). ``wait_for_complete_and_cb()`` returns
only after the callback ran and the binding unlinked the completion, so nothing can dangle.
Completions without a callback and released write/read ops are safe once waited (librados holds
its own reference and moves the ops at submission).
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


def wait(completion: Any) -> Any:
    """Wait until the aio op *and its callback* are done (see the module docstring); return it."""
    completion.wait_for_complete_and_cb()
    return completion


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
