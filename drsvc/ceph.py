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
import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from drsvc import deadline
from drsvc.errors import (
    BackendError,
    BackendForbidden,
    BackendTimeout,
    BackendUnavailable,
    DrsvcError,
    MissingDependency,
    NotFound,
)

INSTALL_HINT = "apt-get install python3-rados; make Debian's binding visible to this Python (see dev/setup)"
RUNBOOK = "ceph-unavailable"


@dataclass(frozen=True)
class Timeouts:
    """How long librados may wait: every op (OSD and monitor) and the connection to the cluster.

    librados waits forever by default: a stopped OSD would hold a backup (and frozen desktops)
    as long as it stays stopped. The config's ``[timeouts]`` section sets these for the process.
    """

    op_seconds: float = 30.0
    connect_seconds: float = 15.0

    def conf(self) -> dict[str, str]:
        return {
            "client_mount_timeout": f"{self.connect_seconds:g}",
            "rados_mon_op_timeout": f"{self.op_seconds:g}",
            "rados_osd_op_timeout": f"{self.op_seconds:g}",
        }


_timeouts = Timeouts()


def set_timeouts(timeouts: Timeouts) -> None:
    """Use ``timeouts`` for connections made from now on (``Services`` calls it from the config)."""
    global _timeouts
    _timeouts = timeouts


def timeouts() -> Timeouts:
    """The timeouts new connections get."""
    return _timeouts


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
    limits = _timeouts
    cache_key = (os.getpid(), conffile, keyring, name, limits)
    with _lock:
        _named["conf"] = conffile  # errors name the conf in use (the config's), not only $CEPH_CONF
        handle = _clusters.get(cache_key)
        if handle is not None and handle.state == "connected":
            return handle
        conf = limits.conf()
        if keyring:
            conf["keyring"] = keyring
        try:
            handle = rados.Rados(conffile=conffile or "", name=name, conf=conf)
            handle.connect(timeout=int(max(1, limits.connect_seconds)))
        except rados.Error as e:
            raise error("connect to the cluster", e) from e
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
    """Wait until the aio op *and its callback* are done (see the module docstring); return it.
    Never stopped by a deadline (``drsvc.deadline``): every op sent must be waited for, or its
    buffers are freed under librados; deadlines are checked where ops are sent (``ceph_errors``)."""
    completion.wait_for_complete_and_cb()
    return completion


_named: dict[str, str | None] = {"conf": None}  # the conf file of the cluster last asked for


def component() -> str:
    """How errors name the cluster: ``ceph (/etc/ceph/ceph.conf)``, the conf last connected with
    (``[hot] ceph_conf``), else ``$CEPH_CONF``."""
    return f"ceph ({_named['conf'] or os.environ.get('CEPH_CONF') or 'default ceph.conf'})"


_TIMED_OUT = (errno.ETIMEDOUT, errno.EINTR)  # librados reports an op timeout as either
_FORBIDDEN = (errno.EACCES, errno.EPERM)
_UNREACHABLE = (errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


def classify(op: str, code: int, detail: str) -> DrsvcError:
    """A failed librados call (positive errno ``code``) as a drsvc error naming the operation."""
    if code == errno.ENOENT:
        return NotFound(f"{op}: not found ({detail})")
    if code in _TIMED_OUT:
        limit = _timeouts.op_seconds if "connect" not in op else _timeouts.connect_seconds
        return BackendTimeout(component(), op, f"no answer within {limit:g} s ({detail})", runbook=RUNBOOK)
    if code in _FORBIDDEN:
        return BackendForbidden(component(), op, f"{detail} (check the client's key and caps)", runbook=RUNBOOK)
    if code in _UNREACHABLE:
        return BackendUnavailable(component(), op, detail, runbook=RUNBOOK)
    return BackendError(f"{op}: {detail}")


def error(op: str, e: Exception) -> DrsvcError:
    """Translate a ``rados.Error`` raised by ``op``."""
    rados = rados_module()
    if isinstance(e, rados.ObjectNotFound):
        return NotFound(f"{op}: not found ({e})")
    if isinstance(e, rados.TimedOut | rados.InterruptedOrTimeoutError):
        return classify(op, errno.ETIMEDOUT, str(e))
    if isinstance(e, rados.PermissionError | rados.PermissionDeniedError):
        return classify(op, errno.EACCES, str(e))
    if isinstance(e, rados.ConnectionShutdown | rados.NotConnected):
        return classify(op, errno.ENOTCONN, str(e))
    code = getattr(e, "errno", None)
    return classify(op, abs(code) if isinstance(code, int) else -1, str(e))


def rv_error(op: str, rv: int) -> DrsvcError:
    """Translate the negative return value of an aio completion."""
    return classify(op, -rv, f"{errno.errorcode.get(-rv, str(rv))} ({rv})")


class NotUtf8Name(DrsvcError):
    """A name in a namespace (an object's, an xattr's, an omap key) that is not UTF-8.

    Its tenant chose it: librados takes any bytes, drsvc's readers and its manifests take text.
    The desktop that holds it fails; every other desktop goes on.
    """


def not_utf8(op: str, e: UnicodeDecodeError) -> NotUtf8Name:
    """The error for a name whose decoding failed (shown with its bytes escaped)."""
    raw = bytes(e.object)
    shown = raw.decode("utf-8", "backslashreplace")
    return NotUtf8Name(
        f"{op}: the name {shown!r} is not UTF-8: drsvc cannot back up an object, xattr or omap key "
        "named so (the desktop's own processes chose it; rename or remove it)"
    )


class LocatorKeyed(DrsvcError):
    """An object of a namespace placed by a locator key (``rados put NAME --object-locator L``).

    Its tenant chose it: such an object is found only by (name, locator), and drsvc reads, writes
    and rolls back objects by name alone, so it would read as absent and be left out of the point.
    The desktop that holds it fails; every other desktop goes on.
    """


def locator_keyed(op: str, name: str, locator: str) -> LocatorKeyed:
    """The error for an object ``name`` placed by ``locator`` (both shown escaped)."""
    return LocatorKeyed(
        f"{op}: the object {name!r} has a locator key ({locator!r}): drsvc addresses objects by name "
        "alone and cannot back it up (the desktop's own processes set it; rewrite the object without one)"
    )


def text(raw: bytes, op: str) -> str:
    """``raw`` (a name librados gave as bytes) as text; ``NotUtf8Name`` naming ``op`` when it is not UTF-8."""
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        raise not_utf8(op, e) from None


@contextlib.contextmanager
def ceph_errors(op: str) -> Iterator[None]:
    """Translate ``rados.Error`` raised inside into drsvc errors (``error``), and the binding's
    failure to decode a name (it decodes every name it returns as strict UTF-8) into ``NotUtf8Name``:
    a tenant names its objects, and such a name must fail its desktop, not the run. The calling
    thread's deadline (``drsvc.deadline``: a desktop's capture) is checked before the call."""
    deadline.check()
    rados = rados_module()
    try:
        yield
    except rados.Error as e:
        raise error(op, e) from e
    except UnicodeDecodeError as e:
        raise not_utf8(op, e) from None
