"""What the fault suite (tests/integration/test_faults_lab.py, bench/faults.py) shares.

* ``Watcher``: reads each lab desktop's counter (``/data/counter``, rewritten five times a second)
  straight from the host through ``/proc/PID/root``, so it sees a freeze without asking drsvc or
  the runtime (Podman's API blocks while a checkpoint is held). ``longest_still(desktop)`` is
  the longest time its counter did not move: the freeze a user saw.
* ``stopped(pid)``: SIGSTOP a daemon (the OSD, radosgw) and always SIGCONT it again.
* ``kill_at(proc, point)``: run drsvc with ``DRSVC_FAULT=POINT:wait=...``, SIGKILL it the moment
  it reaches the point (deterministic kill -9, no timers).
* ``leftovers(...)``: drsvc pool snapshots, clone containers and clone namespaces that no point
  or desktop of the catalog accounts for.

Everything here stops or kills only lab daemons and drsvc processes the caller started; callers
hold the lab lock.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def pid_of(container: str) -> int:
    out = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Pid}}", container],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    return int(out)


def daemon_pids(name: str) -> list[int]:
    """Pids of processes whose command name is ``name`` (ceph-osd, radosgw)."""
    p = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split()]


@contextlib.contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """SIGSTOP ``pids`` for the block; SIGCONT them whatever happens."""
    done: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            done.append(pid)
        yield
    finally:
        for pid in done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _ceph(*args: str, timeout: float = 30) -> str:
    conf = os.environ.get("CEPH_CONF", "/etc/ceph/ceph.conf")
    p = subprocess.run(
        ["ceph", "-c", conf, "--connect-timeout", "10", *args], capture_output=True, text=True, timeout=timeout
    )
    return p.stdout


def _unsettled() -> list[str]:
    """What keeps the cluster from serving: laggy/peering PGs, slow ops (snapshot trimming is fine)."""
    out = []
    for line in _ceph("pg", "dump", "pgs_brief").splitlines()[1:]:
        words = line.split()
        if len(words) >= 2 and words[1].replace("+snaptrim_wait", "").replace("+snaptrim", "") != "active+clean":
            out.append(f"pg {words[0]} {words[1]}")
    health = _ceph("health", "detail")
    if "slow ops" in health or "laggy" in health:
        out.append(health.strip().splitlines()[0])
    if "1 up" not in _ceph("osd", "stat"):
        out.append("osd.0 not up")
    return out


def _settled_for(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _unsettled():
            return False
        time.sleep(2)
    return True


def settle_osd(stopped_for: float, timeout: float = 180) -> None:
    """After the OSD was stopped: wait until it serves every PG again, forcing a re-peer if needed.

    On this one-OSD cluster a stop longer than the PGs' read lease (0.8 x osd_heartbeat_grace =
    16 s) can leave PGs ``laggy`` after SIGCONT, their ops "waiting for readable" for many minutes
    (seen in the lab: the rgw log pool stuck 25 min after a 20 s stop, and every engineer's tests
    failed meanwhile). Marking the OSD down makes it re-peer at once; it reasserts itself up
    within seconds. The mgr's PG states lag the OSD by a report interval, so health is judged over
    a window, not at one glance.
    """
    if stopped_for > 12:
        _ceph("osd", "down", "0")
    time.sleep(6)
    deadline = time.monotonic() + timeout
    forced = stopped_for > 12
    while time.monotonic() < deadline:
        if _settled_for(10):
            return
        if not forced:
            _ceph("osd", "down", "0")
            forced = True
        time.sleep(2)
    raise AssertionError(f"the OSD did not settle after the stall: {_unsettled()[:5]}")


@contextlib.contextmanager
def osd_stopped() -> Iterator[None]:
    """SIGSTOP the lab's OSD for the block; SIGCONT it and make its PGs healthy again, whatever happens."""
    pids = daemon_pids("ceph-osd")
    assert pids, "no ceph-osd process to stop"
    started = time.monotonic()
    try:
        with stopped(pids):
            yield
    finally:
        settle_osd(time.monotonic() - started)


class Watcher:
    """Samples desktops' counters from the host; the longest time each stood still."""

    def __init__(self, desktops: list[str], period: float = 0.02) -> None:
        self.paths = {d: Path(f"/proc/{pid_of(d)}/root/data/counter") for d in desktops}
        self.period = period
        self.still: dict[str, float] = dict.fromkeys(desktops, 0.0)
        self._last: dict[str, tuple[bytes, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        now = time.monotonic()
        for d, (_, since) in self._last.items():
            self.still[d] = max(self.still[d], now - since)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for d, path in self.paths.items():
                try:
                    value = path.read_bytes()[:10]
                except OSError:
                    continue  # restarted or gone: not a freeze
                last = self._last.get(d)
                if last is None or last[0] != value:
                    if last is not None:
                        self.still[d] = max(self.still[d], now - last[1])
                    self._last[d] = (value, now)
            time.sleep(self.period)

    def longest_still(self, desktop: str) -> float:
        return self.still[desktop]


def wait_for(path: Path, timeout: float, proc: subprocess.Popen[str] | None = None) -> None:
    """Wait until ``path`` exists; fail loudly (with the process's output) when it does not."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"drsvc ended (exit {proc.returncode}) before reaching {path.name}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.005)


def drsvc_snapshots(pool: str = "desktops") -> set[str]:
    """Names of drsvc's pool snapshots (``drsvc-*``) in ``pool``, as Ceph lists them."""
    out = subprocess.run(["rados", "-p", pool, "lssnap"], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].isdigit() and words[1].startswith("drsvc-"):
            names.add(words[1])
    return names


def rgw_answers(port: int = 7480) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
            return True
    except Exception as e:  # an HTTP error (403 for anonymous) still means it answers
        return hasattr(e, "code")


@contextlib.contextmanager
def radosgw_killed(name: str = "client.rgw.a", port: int = 7480) -> Iterator[None]:
    """SIGKILL the radosgw serving ``port`` for the block; start it again as it was started, whatever happens."""
    victims = []
    for pid in daemon_pids("radosgw"):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if name.encode() in argv:
            victims.append((pid, [a.decode() for a in argv if a]))
    assert victims, f"no radosgw {name} running"
    try:
        for pid, _ in victims:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while rgw_answers(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield
    finally:
        for _, argv in victims:
            subprocess.run(argv, capture_output=True, timeout=60)  # daemonizes, as dev/lab starts it
        deadline = time.monotonic() + 60
        while not rgw_answers(port):
            if time.monotonic() > deadline:
                raise AssertionError(f"radosgw {name} did not come back on port {port}")
            time.sleep(0.25)


def namespace_objects(namespace: str, pool: str = "desktops") -> list[str]:
    out = subprocess.run(["rados", "-p", pool, "-N", namespace, "ls"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def container_exists(name: str) -> bool:
    return subprocess.run(["podman", "container", "exists", name], capture_output=True).returncode == 0


def truncate(path: Path, keep: int = 100) -> None:
    """Cut the catalog file to its first ``keep`` bytes (a copy that stopped half way)."""
    with open(path, "r+b") as f:
        f.truncate(keep)


def overwrite_page(path: Path, page: int = 2, seed: int = 1) -> None:
    """Overwrite one database page (1-based) with noise, as a bad sector or a stray write would."""
    import random

    with open(path, "r+b") as f:
        size = int.from_bytes(_read_at(f, 16, 2), "big") or 65536
        f.seek((page - 1) * size)
        f.write(random.Random(seed).randbytes(size))


def _read_at(f: object, offset: int, n: int) -> bytes:
    f.seek(offset)  # type: ignore[attr-defined]
    return f.read(n)  # type: ignore[attr-defined, no-any-return]
