"""The node a runtime's desktops run on, told without asking the runtime when it can be.

Podman's ``/info`` and Docker's ``/info`` report the host name of the service's host
(``host.hostname``, ``Name``: the kernel's node name as the service sees it). ``/info`` is slow
(Podman gathers storage and plugin facts for it: 0.25-0.9 s measured in the lab, more than a
whole unchanged backup's volume scan), and every ``drsvc backup`` paid it once to label its
desktops. When the service behind a local API socket runs in this process's UTS namespace, the
name it would report is this process's own host name: the kernel keeps one node name per UTS
namespace. The socket's peer credentials (``SO_PEERCRED``) name the process that listens on it,
and ``/proc/<pid>/ns/uts`` tells its namespace. When anything here cannot be told (another PID
namespace hides the peer, ``/proc`` refuses, a non-Linux host), callers ask ``/info`` as before.
"""

from __future__ import annotations

import os
import socket
import struct

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_pid(socket_path: str, timeout: float = 2.0) -> int | None:
    """The pid (in this PID namespace) of the process listening on a unix socket; None if not told."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket_path)
            raw = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):  # AttributeError: no SO_PEERCRED on this platform
        return None
    pid = _UCRED.unpack(raw)[0]
    return pid if pid > 0 else None  # 0: the listener lives in a PID namespace this one cannot see


def same_uts(pid: int) -> bool:
    """Whether process ``pid`` shares this process's UTS namespace (False when it cannot be told)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/uts") == os.readlink("/proc/self/ns/uts")
    except OSError:
        return False


def local_node_name(socket_path: str) -> str | None:
    """The host name the service behind ``socket_path`` would report, without a request; None
    when its UTS namespace is not provably this process's (ask the service then)."""
    pid = peer_pid(socket_path)
    if pid is None or not same_uts(pid):
        return None
    return socket.gethostname()
