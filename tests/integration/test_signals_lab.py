"""SIGTERM on the real lab: a backup signalled while its desktops stand frozen (Podman + CRIU).

The desktops must move again at once (the batch's ``finally`` releases the freeze hook; before,
the process died on the spot and the kernel dropped the hook's lock), the job must end recorded
``interrupted`` with one line, and the next run must find nothing left and pair again.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from faultkit import Watcher, drsvc_snapshots, wait_for

from drsvc.catalog import Catalog

pytestmark = [pytest.mark.fault, pytest.mark.slow]

BUDGET = 30.0  # far above what the test waits: only the signal may thaw the desktops


def test_sigterm_while_desktops_stand_frozen_thaws_them_at_once(drsvc_env, make_fleet, tmp_path):
    desktops = make_fleet(2)
    policy = f"sig{os.getpid()}"
    drsvc_env.policy(policy, desktops, capture={"freeze_timeout": f"{BUDGET:g}s"})
    first = drsvc_env.cli("--json", "backup", "--policy", policy)
    assert first.code == 0, first.output
    earlier = {r["point_id"] for r in first.json()["results"]}

    go = tmp_path / "go"  # never touched: the backup stays parked, frozen, until the signal
    env = {**os.environ, "DRSVC_FAULT": f"after-freeze:wait={go}"}
    with Watcher(desktops) as watch:
        proc = drsvc_env.subprocess("--json", "backup", "--policy", policy, env=env)
        wait_for(Path(f"{go}.reached"), 120, proc)
        time.sleep(1.0)  # they stand frozen
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        out, err = proc.communicate(timeout=120)
        ended = time.monotonic() - signalled
        time.sleep(0.5)  # the counters move again
    still = max(watch.still.values())
    # straight to fd 2: the lab fixtures leave print() buffered behind pytest's own lines
    os.write(2, f"[signals-lab] ended {ended:.2f} s after SIGTERM; longest still {still:.2f} s\n".encode())

    assert "Traceback" not in err, err
    assert proc.returncode == 1, f"{out}\n{err}"
    lines = [ln for ln in err.splitlines() if ln.startswith("drsvc: error:")]
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0], err
    for d in desktops:
        assert watch.longest_still(d) < 1.0 + 5.0, f"{d} stood still {watch.longest_still(d):.2f} s after SIGTERM"
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    try:
        jobs = catalog.query("SELECT status FROM jobs WHERE kind = 'backup' ORDER BY id DESC LIMIT 1")
        assert jobs[0]["status"] == "interrupted", jobs
    finally:
        catalog.close()

    assert drsvc_env.cli("cleanup").code == 0
    again = drsvc_env.cli("--json", "backup", "--policy", policy)
    assert again.code == 0, again.output
    assert {(r["status"], r["consistency"]) for r in again.json()["results"]} == {("complete", "paired")}
    assert drsvc_env.cli("prune").code == 0
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    try:
        assert {p["id"] for p in catalog.points(status="complete")} >= earlier
        live = {r["name"] for r in catalog.query("SELECT name FROM pool_snapshots WHERE removed_at IS NULL")}
    finally:
        catalog.close()
    ours = {s for s in drsvc_snapshots() if s.startswith(f"drsvc-{policy}-")}
    assert ours == live, f"pool snapshots left behind: {sorted(ours - live)}"
