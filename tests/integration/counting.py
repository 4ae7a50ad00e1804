"""The lab's busybox desktops write ``<count> <boot id>`` to /data/counter every 0.2 s.

A desktop restored from a checkpoint keeps its boot id and counts on from the checkpoint's value:
that is how the restore tests see that the process continued rather than started afresh.
"""

from __future__ import annotations

import time
from typing import Any

from runtime_suite import read_counter


def counted_past(runtime: Any, name: str, ticks: int, timeout: float = 30.0) -> int:
    """Wait until the desktop has counted ``ticks`` more than now; return its count then.

    Taken as the count at an incident, it leaves a process resumed from an earlier checkpoint
    ``ticks`` x 0.2 s to restore and be read before its count could reach this one: a margin in
    counts, not in wall-clock guesses (a fixed sleep left ~1 s, less than a loaded restore takes).
    """
    start, _ = read_counter(runtime, name)
    deadline = time.monotonic() + timeout
    while (now := read_counter(runtime, name)[0]) < start + ticks:
        assert time.monotonic() < deadline, f"{name} counted {now - start} in {timeout} s"
        time.sleep(0.2)
    return now
