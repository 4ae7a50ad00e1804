"""The fault-injection seam: parsing, each action, the hit log, and that code names only known points."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsvc import faults
from drsvc.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_faults() -> Iterator[None]:
    faults.configure(None)
    yield
    faults.configure(None)


def test_unset_is_a_no_op() -> None:
    faults.point("after-freeze")  # nothing configured: returns at once
    assert faults._state is None


def test_parse_reads_points_actions_and_hits() -> None:
    got = faults.parse("after-freeze:kill, mid-upload:stall=0.5@3,after-snapshot:wait=/tmp/x,after-manifest:raise")
    assert got == [
        faults.Fault("after-freeze", "kill", None, 1),
        faults.Fault("mid-upload", "stall", "0.5", 3),
        faults.Fault("after-snapshot", "wait", "/tmp/x", 1),
        faults.Fault("after-manifest", "raise", None, 1),
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "after-frezee:kill",
        "after-freeze",
        "after-freeze:explode",
        "after-freeze:stall",
        "after-freeze:stall=x",
        "after-freeze:kill@0",
        "after-freeze:kill@two",
        "after-freeze:wait",
    ],
)
def test_bad_specs_are_input_errors(spec: str) -> None:
    with pytest.raises(InvalidInput, match="DRSVC_FAULT"):
        faults.parse(spec)


def test_a_bad_spec_fails_the_first_point_reached_not_silently() -> None:
    faults.configure("after-frezee:kill")
    with pytest.raises(InvalidInput, match="names no fault point"):
        faults.point("after-pending")


def test_raise_fires_on_the_named_hit_only() -> None:
    faults.configure("mid-upload:raise@3")
    faults.point("mid-upload")
    faults.point("after-freeze")  # other points do not count towards mid-upload's hits
    faults.point("mid-upload")
    with pytest.raises(faults.FaultInjected, match="mid-upload"):
        faults.point("mid-upload")
    faults.point("mid-upload")  # the 4th passes


def test_stall_sleeps() -> None:
    faults.configure("after-snapshot:stall=0.2")
    t = time.monotonic()
    faults.point("after-snapshot")
    assert time.monotonic() - t >= 0.2


def test_wait_announces_and_holds_until_the_go_file(tmp_path: Path) -> None:
    go = tmp_path / "go"
    faults.configure(f"after-freeze:wait={go}")
    passed = threading.Event()

    def run() -> None:
        faults.point("after-freeze")
        passed.set()

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "go.reached").exists():
        assert time.monotonic() < deadline, "the point never announced itself"
        time.sleep(0.01)
    assert not passed.wait(0.2), "went on before the go file existed"
    go.touch()
    assert passed.wait(10)
    t.join()


def test_the_log_lists_every_hit(tmp_path: Path) -> None:
    log = tmp_path / "hits"
    faults.configure(None, log=str(log))
    for name in ("after-pending", "after-freeze", "after-pending"):
        faults.point(name)
    pid = os.getpid()
    assert faults.hits(log) == [("after-pending", 1, pid), ("after-freeze", 1, pid), ("after-pending", 2, pid)]


def test_kill_is_sigkill_from_the_environment(tmp_path: Path) -> None:
    log = tmp_path / "hits"
    code = "from drsvc import faults; faults.point('after-pending'); faults.point('after-freeze'); print('survived')"
    env = {**os.environ, "DRSVC_FAULT": "after-freeze:kill", "DRSVC_FAULT_LOG": str(log)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc
    assert "survived" not in proc.stdout
    assert [h[0] for h in faults.hits(log)] == ["after-pending", "after-freeze"]


def test_code_names_only_registered_points_and_uses_every_one() -> None:
    used: set[str] = set()
    for path in (ROOT / "drsvc").rglob("*.py"):
        if path.name == "faults.py":
            continue
        used |= set(re.findall(r"faults\.point\(\s*\"([a-z0-9-]+)\"", path.read_text()))
    assert used - set(faults.POINTS) == set(), "points called in the code but not registered"
    assert set(faults.POINTS) - used == set(), "registered points no code reaches"
