"""The free-space guard before a desktop's checkpoint: a tenant's memory must not fill the host's disk.

CRIU writes a checkpoint's memory pages on the host, where the runtime keeps the container's
files (Podman: the container's userdata directory, then its exported archive): measured, 1 GiB of
a desktop's memory held 2.6 GiB more of that disk at the dump's peak. A desktop that grows its
memory right before a backup would fill the disk every tenant and the host share. Before each
checkpoint the runtime is asked what the desktop's memory is now and where its image would go
(optional member ``checkpoint_space(name) -> (memory bytes, path) | None``); a desktop whose image
(``FACTOR`` x memory) would not fit with ``reserve`` bytes left free is refused: it gets a
crash-consistent point, its batch-mates are checkpointed as usual.

A batch's dumps run together, so the desktops whose checkpoints go to one filesystem share one
budget (its free space less ``reserve``): ``refusals`` admits them smallest first, each taking its
image from the budget, and refuses the ones left without room, saying the batch's other
checkpoints took it. docs/security.md says what stays open.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from drsvc.errors import DrsvcError
from drsvc.runtimes.base import DesktopRef

FACTOR = 2.5  # measured 2.6 x at peak for 1 GiB (pages, then the archive); pages compress a little
MIB = 1 << 20


@dataclass(frozen=True)
class Space:
    """What the guard knows of one desktop: its memory now and the disk its checkpoint goes to."""

    memory: int  # bytes (cgroup memory.current)
    path: str  # where the runtime writes the checkpoint
    free: int  # bytes free there
    disk: int | str = ""  # the filesystem holding path: its st_dev, or path when that is unknown

    def need(self, reserve: int) -> int:
        return int(self.memory * FACTOR) + reserve


def free_bytes(path: str) -> int:
    """Bytes free on the filesystem holding ``path`` to non-root writers (the root-reserved blocks stay the host's)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def device_of(path: str) -> int | str:
    """The filesystem holding ``path`` (its ``st_dev``), or ``path`` itself when it cannot be stat'ed."""
    try:
        return os.stat(path).st_dev
    except OSError:
        return path


def measure(runtime: object, desktop: DesktopRef, checkpoint_dir: str | None = None) -> Space | None:
    """The desktop's ``Space``; None when the runtime cannot tell its memory or path (the guard is skipped).

    ``checkpoint_dir`` (config ``runtime.checkpoint_dir``) replaces the path the runtime reports.
    """
    fn = getattr(runtime, "checkpoint_space", None)
    if fn is None:
        return None
    try:
        told = fn(desktop.container)
    except (DrsvcError, OSError, ValueError):  # cannot tell: skipped, the checkpoint says what is wrong
        return None
    if told is None:
        return None
    memory, path = told
    path = checkpoint_dir or path
    try:
        return Space(int(memory), path, free_bytes(path), device_of(path))
    except OSError:
        return None


def refusal(space: Space | None, reserve: int) -> str | None:
    """Why this desktop's checkpoint is refused, None when its image fits (or nothing is known)."""
    if space is None or space.free >= space.need(reserve):
        return None
    return (
        f"checkpoint refused: its memory ({space.memory / MIB:.0f} MiB) would take about "
        f"{space.need(0) / MIB:.0f} MiB on the host at {space.path}, which has {space.free / MIB:.0f} MiB free "
        f"(keeping {reserve / MIB:.0f} MiB free: runtime.checkpoint_reserve_mib)"
    )


def refusals(spaces: Mapping[str, Space | None], reserve: int) -> dict[str, str]:
    """The batch's refused checkpoints, desktop id -> why; the desktops of one filesystem share its budget.

    The budget is the filesystem's free space (the least its desktops saw) less ``reserve``. Desktops
    are admitted smallest memory first: the batch keeps the most paired points, and a desktop that
    grew its memory right before the backup is the one left out, not the batch-mates that did not.
    """
    budget: dict[int | str, int] = {}
    for s in spaces.values():
        if s is not None:
            budget[s.disk] = min(budget.get(s.disk, s.free), s.free)
    budget = {disk: free - reserve for disk, free in budget.items()}
    refused: dict[str, str] = {}
    known = [(desktop, s) for desktop, s in spaces.items() if s is not None]
    for desktop, s in sorted(known, key=lambda item: item[1].memory):  # stable: ties keep batch order
        alone = refusal(s, reserve)
        if alone is None and s.need(0) <= budget[s.disk]:
            budget[s.disk] -= s.need(0)
            continue
        refused[desktop] = alone or (
            f"checkpoint refused: its memory ({s.memory / MIB:.0f} MiB) would take about "
            f"{s.need(0) / MIB:.0f} MiB on the host at {s.path}, which has {s.free / MIB:.0f} MiB free, "
            f"and this batch's other checkpoints on that disk leave it {max(budget[s.disk], 0) / MIB:.0f} MiB "
            f"(keeping {reserve / MIB:.0f} MiB free: runtime.checkpoint_reserve_mib)"
        )
    return refused
