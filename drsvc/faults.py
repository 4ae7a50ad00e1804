"""Fault injection at named moments, for tests and the fault suite; free when unused.

drsvc calls ``faults.point("after-freeze")`` (and friends, listed in ``POINTS``) at the moments
where a crash or a stall matters: desktops frozen, pool snapshot taken, half the data uploaded,
clone created, old container removed... With ``DRSVC_FAULT`` unset the call is one comparison.
Set, it names what happens at which point::

    DRSVC_FAULT=after-freeze:kill            # SIGKILL this process at the first hit (kill -9)
    DRSVC_FAULT=mid-upload:kill@40           # ... at the 40th hit (hits are counted per point)
    DRSVC_FAULT=after-snapshot:stall=5       # sleep 5 s there (a slow backend, a GC pause)
    DRSVC_FAULT=after-manifest:raise         # raise FaultInjected (a BackendError) there
    DRSVC_FAULT=after-freeze:wait=/tmp/go    # create /tmp/go.reached, wait until /tmp/go exists
    DRSVC_FAULT=after-freeze:kill,mid-upload:stall=1   # several, comma-separated

``wait=PATH`` lets a test act at the exact moment (stop the OSD while desktops stand frozen,
kill the process from outside) and then let drsvc go on; it waits at most ``WAIT_LIMIT`` seconds.
``DRSVC_FAULT_LOG=PATH`` appends one line ``POINT HIT PID`` per hit (with or without a fault),
so a test or the random-kill driver learns which moments a run went through.

An unknown point or action in ``DRSVC_FAULT`` is an input error (exit 2) at the first point a
run reaches, never silently ignored: a typo must not turn a fault trial into a plain run.
``python -m drsvc.faults`` prints the points.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from drsvc.errors import BackendError, InvalidInput

ENV = "DRSVC_FAULT"
LOG_ENV = "DRSVC_FAULT_LOG"
WAIT_LIMIT = 600.0

# name -> the moment it marks; code calls point(name) with these names only (a unit test checks)
POINTS: dict[str, str] = {
    # backup
    "after-pending": "backup: the batch's points are recorded pending; nothing frozen yet",
    "after-freeze": "backup: every desktop of the batch stands frozen; no pool snapshot yet",
    "after-snapshot": "backup: the pool snapshot exists; desktops still frozen",
    "after-release": "backup: desktops released; archives and volumes not stored yet",
    "mid-upload": "any store: one object is about to be written (hot chunks, cold packs, manifests)",
    "before-manifest": "backup: a desktop's data is stored; its manifest is not written",
    "after-manifest": "backup: a desktop's manifest is written; the catalog does not call it complete",
    # tier
    "tier-after-packs": "tier: a batch's packs are in the cold store; no cold manifest yet",
    "tier-before-commit": "tier: a point's cold manifest is written; the catalog does not call it cold",
    # prune
    "prune-after-drop": "prune: a hot copy was dropped from the catalog (one hit per copy)",
    "prune-after-snapshot-removed": "prune: a pool snapshot was removed from Ceph; the catalog still lists it",
    # restore
    "mid-restore-volume": "restore: one object of the volume is about to be written or rolled back",
    "mid-object-write": "any volume write: an object's first operation is sent; its next piece is about to be",
    "after-restore-volume": "restore: the volume is restored; the container not yet",
    "after-container-removed": "restore in place: the old container is removed; the new one not yet restored",
    "after-clone-created": "restore: the container (or clone) runs; health not checked, not recorded",
    "after-image-loaded": "restore: a base image the runtime lacked is loaded; no container runs from it yet",
    "after-checkpoint-pushed": "restore (crio://): the checkpoint image is in the registry; no pod created yet",
    "after-checkpoint-placed": "restore (crio://, archive mode): the archive is on the node; no pod created yet",
}

ACTIONS = ("kill", "raise", "stall", "wait")


class FaultInjected(BackendError):
    """The failure ``DRSVC_FAULT=POINT:raise`` asked for (handled as an unexpected backend error)."""

    traceback = False


@dataclass(frozen=True)
class Fault:
    """What to do at one point, on which hit."""

    point: str
    action: str
    arg: str | None = None
    hit: int = 1


def parse(spec: str) -> list[Fault]:
    """``POINT:ACTION[=ARG][@N],...`` -> faults; ``InvalidInput`` naming the bad part."""
    faults = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, rest = part.partition(":")
        if not sep or name not in POINTS:
            raise InvalidInput(f"{ENV}={spec!r}: {part!r} names no fault point (python -m drsvc.faults lists them)")
        rest, _, hit_text = rest.partition("@")
        action, _, arg = rest.partition("=")
        if action not in ACTIONS or (action in ("stall", "wait")) != bool(arg):
            raise InvalidInput(f"{ENV}={spec!r}: {part!r}: action must be kill, raise, stall=SECONDS or wait=PATH")
        try:
            hit = int(hit_text) if hit_text else 1
            if action == "stall":
                float(arg)
        except ValueError:
            raise InvalidInput(f"{ENV}={spec!r}: {part!r}: not a number") from None
        if hit < 1:
            raise InvalidInput(f"{ENV}={spec!r}: {part!r}: hits count from 1")
        faults.append(Fault(name, action, arg or None, hit))
    return faults


class _State:
    """The faults of this process and how often each point was hit."""

    def __init__(self, spec: str | None, log: str | None) -> None:
        self.error: InvalidInput | None = None
        self.faults: dict[str, list[Fault]] = {}
        try:
            for f in parse(spec or ""):
                self.faults.setdefault(f.point, []).append(f)
        except InvalidInput as e:
            self.error = e
        self.log = log
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()


def _from_env() -> _State | None:
    spec, log = os.environ.get(ENV), os.environ.get(LOG_ENV)
    return _State(spec, log) if spec or log else None


_state: _State | None = _from_env()


def configure(spec: str | None, log: str | None = None) -> None:
    """Set this process's faults (tests that run drsvc in-process); ``None`` turns them off."""
    global _state
    _state = _State(spec, log) if spec or log else None


def point(name: str) -> None:
    """Mark the moment ``name`` (one of ``POINTS``); does what ``DRSVC_FAULT`` asks there, if anything."""
    if _state is None:
        return
    _hit(_state, name)


def _hit(state: _State, name: str) -> None:
    if state.error is not None:
        raise state.error
    with state.lock:
        n = state.hits[name] = state.hits.get(name, 0) + 1
        if state.log:
            with open(state.log, "a") as f:
                f.write(f"{name} {n} {os.getpid()}\n")
    for fault in state.faults.get(name, ()):
        if fault.hit == n:
            _act(fault)


def _act(fault: Fault) -> None:
    if fault.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # the signal is delivered before this returns; never run on
    elif fault.action == "raise":
        raise FaultInjected(f"injected fault at {fault.point} ({ENV})")
    elif fault.action == "stall":
        time.sleep(float(fault.arg or 0))
    elif fault.action == "wait":
        go = Path(fault.arg or "")
        Path(f"{go}.reached").touch()
        deadline = time.monotonic() + WAIT_LIMIT
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)


def hits(log: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
    """The ``(point, hit, pid)`` lines a ``DRSVC_FAULT_LOG`` file holds, in order."""
    out = []
    try:
        text = Path(log).read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[1].isdigit() and words[2].isdigit():
            out.append((words[0], int(words[1]), int(words[2])))
    return out


if __name__ == "__main__":
    width = max(map(len, POINTS))
    for name, what in POINTS.items():
        print(f"{name:<{width}}  {what}")
