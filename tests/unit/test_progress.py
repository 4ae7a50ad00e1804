"""Progress: bars with bytes and ETA on a terminal, plain lines otherwise; jobs report their bytes."""

from __future__ import annotations

import io
import os
from datetime import timedelta

import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture, used through pytestmark)
from rich.console import Console

from drsvc import clock
from drsvc.cli.progress import ProgressView

MiB = 1024 * 1024


class Clock:
    """``time.monotonic`` of the progress module, moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr("drsvc.cli.progress.time.monotonic", lambda: self.now)


def test_plain_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    clock_ = Clock(monkeypatch)
    out = io.StringIO()
    others: list[str] = []
    view = ProgressView(Console(file=out, width=200), then=lambda kind, **f: others.append(kind), every=0)
    view("progress", task="backup d1", advance=MiB, total=4 * MiB)
    view("desktop", outcome=None)
    clock_.now += 2
    view("progress", task="backup d1", advance=2 * MiB, total=4 * MiB)
    view("progress", task="backup d1", advance=MiB, total=4 * MiB)
    view("progress", task="backup d1", done=True)
    lines = out.getvalue().splitlines()
    # at the start no speed or ETA yet (a rate over microseconds is noise), then both
    assert lines[0] == "backup d1: 1.0 MiB of 4.0 MiB (25%)"
    assert lines[1] == "backup d1: 3.0 MiB of 4.0 MiB (75%, 1.5 MiB/s, ~1s left)"
    assert lines[-1].startswith("backup d1: done, 4.0 MiB in 2.0s")
    assert others == ["desktop"]  # other events pass through


def test_plain_lines_are_rate_limited_and_count_items() -> None:
    out = io.StringIO()
    view = ProgressView(Console(file=out, width=200), every=3600)
    for _ in range(100):
        view("progress", task="tier to cold", advance=1000, item=1, items=100)
    view("progress", task="tier to cold", done=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the first, then the end: not one per chunk
    assert lines[0] == "tier to cold: 1 of 100 chunks (1%)"
    assert lines[1].startswith("tier to cold: done, 97.7 KiB, 100 chunks in ")


def test_a_bar_with_bytes_and_eta_on_a_terminal() -> None:
    out = io.StringIO()
    view = ProgressView(Console(file=out, force_terminal=True, width=120))
    view("progress", task="fetch checkpoint (hot)", advance=2 * MiB, total=8 * MiB)
    view("progress", task="fetch checkpoint (hot)", advance=6 * MiB, total=8 * MiB)
    view("progress", task="fetch checkpoint (hot)", done=True)
    text = out.getvalue()
    assert "fetch checkpoint (hot)" in text and "8.0 MiB / 8.0 MiB" in text
    view.close()


@pytest.mark.usefixtures("aws")
def test_verify_read_data_reports_its_progress(tmp_path, run_cli) -> None:
    kit = ColdKit(tmp_path)
    kit.policy("std", ["alice"])
    kit.point("alice", clock.now() - timedelta(hours=1), os.urandom(3 * MiB), policy="std")
    result = run_cli("--config", str(tmp_path / "drsvc.toml"), "verify", "--all", "--read-data")
    assert result.code == 0, result.output
    assert "verify hot (read data): done, " in result.stderr and " chunks in " in result.stderr
    kit.catalog.close()


@pytest.mark.usefixtures("aws")
def test_tiering_reports_chunks_and_bytes(tmp_path) -> None:
    from drsvc.tiering import TierJob

    kit = ColdKit(tmp_path)
    kit.policy("std", ["alice"])
    kit.point("alice", clock.now() - timedelta(hours=3), os.urandom(3 * MiB), policy="std")
    events: list[dict] = []
    TierJob(kit.services, None, on_event=lambda kind, **f: events.append(f) if kind == "progress" else None).run()
    assert events and events[-1] == {"task": "tier to cold", "done": True}
    moved = events[:-1]
    assert sum(e["advance"] for e in moved) >= 3 * MiB and {e["items"] for e in moved} == {len(moved)}
    kit.catalog.close()


def test_plain_lines_load_no_progress_bars() -> None:
    """Piped or under cron (every cron minute pays its imports), rich's progress bars are not loaded."""
    import subprocess
    import sys

    probe = (
        "import io, sys\n"
        "from rich.console import Console\n"
        "from drsvc.cli.progress import ProgressView\n"
        "view = ProgressView(Console(file=io.StringIO(), width=200), every=0)\n"
        "view('progress', task='backup d1', advance=1, total=2)\n"
        "view('progress', task='backup d1', done=True)\n"
        "print('rich.progress' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
