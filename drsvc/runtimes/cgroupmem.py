"""A container's memory as CRIU would dump it, read from its cgroup on this host (v2 or v1).

CRIU writes a process's anonymous memory and its shared memory (tmpfs, /dev/shm, memfd); the
file pages the kernel caches are not dumped. So the figure is ``anon + shmem`` of the cgroup's
``memory.stat`` (v1: ``total_rss + total_shmem``), not ``memory.current``, which counts the cache
too and would refuse a desktop that merely read many files. None when it cannot be read (a remote
runtime, no pid, no memory controller): the caller skips what needed it.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")

_V2_KEYS = ("anon", "shmem")
_V1_KEYS = ("total_rss", "total_shmem")


def dumped_memory(pid: int) -> int | None:
    """Bytes of anonymous and shared memory in the cgroup of host process ``pid``; None: unknown."""
    if pid <= 0:
        return None
    try:
        lines = (PROC / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hier, controllers, path = [*line.split(":", 2), "", ""][:3]
        rel = path.lstrip("/")
        if hier == "0" and controllers == "":
            found = _sum(CGROUP_ROOT / rel / "memory.stat", _V2_KEYS)
        elif "memory" in controllers.split(","):
            found = _sum(CGROUP_ROOT / "memory" / rel / "memory.stat", _V1_KEYS)
        else:
            continue
        if found is not None:
            return found
    return None


def _sum(stat: Path, keys: tuple[str, ...]) -> int | None:
    try:
        text = stat.read_text()
    except OSError:
        return None
    values = dict(line.split(None, 1) for line in text.splitlines() if " " in line)
    try:
        return sum(int(values[k]) for k in keys)
    except (KeyError, ValueError):
        return None
