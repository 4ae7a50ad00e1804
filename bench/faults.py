"""The fault suite, full configuration: kills, stalls and damage on the real lab; runs and violations per trial type.

Every trial runs drsvc through its CLI in its own process and then checks the invariants of issue
"fail safe and fail loud":

* frozen   -- no desktop stood still longer than its freeze budget (seen from the host: the
              desktops' counters, read through /proc, must keep moving);
* broken   -- no complete point is broken (``drsvc verify --all`` exit 0 after recovery);
* lost     -- no point that was complete before the trial (and that retention keeps) is gone;
* leftover -- after the next run nothing is left: pool snapshots of the trial's policy equal the
              catalog's live ones, no clone container or namespace, no restore, object restore
              or drill still "running", ``drsvc catalog check`` exit 0;
* traceback-- no command printed a Python traceback;
* damaged  -- (catalog trials) one line naming the file, exit 4, and the file unchanged.

Trial types: backup / tier / prune / in-place restore / clone restore killed (SIGKILL at every
named fault point, and at random moments), radosgw killed mid-tier, the OSD stopped during a
freeze, the catalog truncated and page-overwritten; and (``bench/faultops.py``, with the invariants
each command adds) drill, copy to the DR site, key rotation, single-object restore, restore from
the cold tier, cleanup itself and the scheduler's tick killed. ``--quick`` is roughly the CI
configuration. The environment and the common checks are ``bench/faultenv.py``.

Needs the lab and its lock; everything it creates is prefixed ``failsafe-bench`` and removed::

    eval "$(dev/lab env)"; flock /tmp/drsvc-lab.lock .venv/bin/python bench/faults.py      # ~20 min
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/faults.py --quick --only backup,osd-stall
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faultops
from faultenv import BUDGET, NUMBERS, POLICY, Env, NotKilled, Violation, watched
from faultkit import (
    container_exists,
    daemon_pids,
    drsvc_snapshots,
    osd_stopped,
    overwrite_page,
    radosgw_killed,
    stopped,
    truncate,
    wait_for,
)


# ---------------------------------------------------------------------- trials
def backup_trial(env: Env, point: str | float) -> None:
    before = env.complete()
    with watched(env):
        if isinstance(point, str):
            env.killed_at(point, "backup", "--policy", POLICY)
        else:
            env.killed_after(point, "backup", "--policy", POLICY)
        time.sleep(0.6)
    env.run("backup", "--policy", POLICY)  # the next run: cleans up, then works
    if not before <= env.complete():
        raise Violation(f"lost: {sorted(before - env.complete())[:3]}")
    env.check_leftovers()
    env.check_sound()


def tier_trial(env: Env, point: str | float) -> None:
    env.run("backup", "--policy", POLICY)
    time.sleep(1.2)  # tiering.after = 1s
    before = env.complete()
    if isinstance(point, str):
        env.killed_at(point, "tier")
    else:
        env.killed_after(point, "tier")
    env.run("tier")
    if not before <= env.complete():
        raise Violation("lost: a killed tier run lost a point")
    env.check_leftovers()
    env.check_sound()


def prune_trial(env: Env, point: str | float) -> None:
    env.run("backup", "--policy", POLICY)
    env.run("tier")
    _, out = env.run("--json", "prune", "--dry-run")
    dropped = {d["point_id"] for d in json.loads(out)["dropped"]}
    kept = env.complete() - dropped
    if isinstance(point, str):
        try:
            env.killed_at(point, "prune")
        except Violation:
            if dropped:
                raise
            return  # nothing to drop: the point is never reached
    else:
        env.killed_after(point, "prune")
    env.run("prune")
    c = env.catalog()
    try:
        still = {p["id"] for p in c.points(status="complete") if p["tiers"]}
    finally:
        c.close()
    if not kept <= still:
        raise Violation(f"lost: prune killed lost kept points {sorted(kept - still)[:3]}")
    env.check_leftovers()
    env.check_sound()


def restore_in_place_trial(env: Env, point: str) -> None:
    desktop = env.desktops[0]
    env.run("backup", desktop)
    env.killed_at(point, "restore", desktop, "--force")
    if not container_exists(desktop):
        _, listed = env.run("points", "list", desktop)
        if "interrupted" not in listed:
            raise Violation("interrupted restore not visible in points list")
    env.run("restore", desktop, "--force", ok=(0, 5))  # the same command resumes
    if not container_exists(desktop):
        raise Violation("resumed restore did not bring the desktop back")
    _, listed = env.run("points", "list", desktop)
    if "interrupted" in listed:
        raise Violation("restore still listed as interrupted after it was resumed")
    env.check_leftovers()


def restore_clone_trial(env: Env, point: str | float) -> None:
    desktop = env.desktops[0]
    env.run("backup", desktop)
    clone = f"{desktop}-clone{random.randrange(10**6)}"
    if isinstance(point, str):
        env.killed_at(point, "restore", desktop, "--as", clone)
    else:
        env.killed_after(point, "restore", desktop, "--as", clone)
    if isinstance(point, float) and env.finished_clone(clone):
        env.drop_clone(clone)  # the restore finished before the kill: its clone is no leftover
        raise NotKilled(f"restore finished in under {point:.2f} s")
    env.run("cleanup")
    if container_exists(clone):
        raise Violation(f"leftover: clone {clone} after cleanup")
    from drsvc.volumes import open_volume

    if open_volume(f"rados://desktops/{clone}").objects_now():
        raise Violation(f"leftover: namespace {clone} after cleanup")
    env.check_leftovers()


def radosgw_trial(env: Env, point: str) -> None:
    env.run("backup", "--policy", POLICY)
    time.sleep(1.2)
    go = env.root / "go"
    go.unlink(missing_ok=True)
    Path(f"{go}.reached").unlink(missing_ok=True)
    name, _, hit = point.partition("@")
    fault = f"{name}:wait={go}" + (f"@{hit}" if hit else "")
    proc = subprocess.Popen(
        env.argv("tier"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DRSVC_FAULT": fault},
    )
    wait_for(Path(f"{go}.reached"), 300, proc)
    with radosgw_killed():
        go.touch()
        _, err = proc.communicate(timeout=600)
    env.stderr.append(err)
    if proc.returncode == 0:
        raise Violation("tier exited 0 with radosgw killed")
    env.run("tier")
    env.check_leftovers()
    env.check_sound()


def osd_trial(env: Env, stall: float) -> None:
    before = env.complete()
    go = env.root / "go"
    go.unlink(missing_ok=True)
    Path(f"{go}.reached").unlink(missing_ok=True)
    env_vars = {**os.environ, "DRSVC_FAULT": f"after-freeze:wait={go}"}
    with watched(env):
        proc = subprocess.Popen(
            env.argv("--json", "backup", "--policy", POLICY),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_vars,
        )
        wait_for(Path(f"{go}.reached"), 300, proc)
        with osd_stopped():
            go.touch()
            t = time.monotonic()
            try:
                out, err = proc.communicate(timeout=stall)
                gave_up = time.monotonic() - t
            except subprocess.TimeoutExpired:
                out = err = ""
                gave_up = None
            time.sleep(max(0.0, stall - (time.monotonic() - t)))
        if gave_up is None:
            out, err = proc.communicate(timeout=600)
            gave_up = time.monotonic() - t
    env.stderr.append(err)
    doc = json.loads(out)
    freezes = [r["freeze_ms"] for r in doc["results"] if r["freeze_ms"] is not None]
    NUMBERS.append(
        f"OSD stopped {stall:g} s during a freeze: backup exit {proc.returncode}, gave up after {gave_up:.1f} s; "
        f"freeze budget {BUDGET * 1000:.0f} ms, measured (hook) "
        f"{min(freezes, default=0):.0f}-{max(freezes, default=0):.0f} ms"
    )
    if any(r["status"] == "complete" and r["consistency"] == "paired" for r in doc["results"]):
        raise Violation("a point claims to be paired after the OSD stalled its snapshot")
    if proc.returncode == 0:
        raise Violation("backup exited 0 with its snapshot stalled")
    env.run("backup", "--policy", POLICY)
    if not before <= env.complete():
        raise Violation("lost: an earlier point after the OSD stall")
    env.check_leftovers()


def batch_trial(env: Env, counts: tuple[int, int]) -> None:
    """N killed backups and M killed clone restores back to back, then ONE cleanup: nothing left."""
    backups, clones = counts
    rng = random.Random(7)
    points = ["after-freeze", "after-snapshot", "after-release", "mid-upload@3", "before-manifest", "after-manifest"]
    before = env.complete()
    for n in range(backups):
        if n % 2:
            env.killed_at(points[n % len(points)], "backup", "--policy", POLICY)
        else:
            env.killed_after(rng.uniform(0.3, 3.0), "backup", "--policy", POLICY)
    desktop = env.desktops[0]
    names = [f"{desktop}-clone-batch{n}" for n in range(clones)]
    for n, name in enumerate(names):
        if n % 2:
            env.killed_at(
                ("mid-restore-volume@2", "after-restore-volume", "after-clone-created")[n % 3],
                "restore",
                desktop,
                "--as",
                name,
            )
        else:
            env.killed_after(rng.uniform(0.4, 1.6), "restore", desktop, "--as", name)
            if env.finished_clone(name):
                env.drop_clone(name)  # finished before the kill: not a leftover
    env.run("cleanup")  # one cleanup (what `drsvc prune` also does first)
    c = env.catalog()
    try:
        live = {r["name"] for r in c.query("SELECT name FROM pool_snapshots WHERE removed_at IS NULL")}
    finally:
        c.close()
    from drsvc.volumes import open_volume

    left = sorted({s for s in drsvc_snapshots() if s.startswith(f"drsvc-{POLICY}-")} - live)  # policy runs only
    left += [n for n in names if container_exists(n)]
    left += [n for n in names if open_volume(f"rados://desktops/{n}").objects_now()]
    NUMBERS.append(f"{backups} killed backups + {clones} killed clone restores, then one cleanup: {len(left)} left")
    if left:
        raise Violation(f"leftover after one cleanup: {left[:5]}")
    if not before <= env.complete():
        raise Violation("lost: an earlier point")
    env.check_leftovers()


def stalled_trial(env: Env, daemon: str) -> None:
    """A backend stopped (SIGSTOP, not dead: connections hang): how long until drsvc gives up, and how."""
    env.run("backup", "--policy", POLICY)
    time.sleep(1.2)
    env.run("tier")
    with osd_stopped() if daemon == "ceph-osd" else stopped(_rgw_pids()):
        t = time.monotonic()
        p = subprocess.run(env.argv("verify", "--all"), capture_output=True, text=True, timeout=900)
        gave_up = time.monotonic() - t
    env.stderr.append(p.stderr)
    lines = [line for line in p.stderr.strip().splitlines() if line.startswith("drsvc: error")]
    NUMBERS.append(
        f"{daemon} stopped: `drsvc verify --all` gave up after {gave_up:.1f} s, exit {p.returncode}: "
        + (lines[0][:160] if lines else p.stderr.strip()[:160])
    )
    if p.returncode == 0 or not lines:
        raise Violation(f"verify with {daemon} stopped: exit {p.returncode} and no error line")
    env.check_leftovers()


def _rgw_pids() -> list[int]:
    out = []
    for pid in daemon_pids("radosgw"):
        if b"client.rgw.a" in Path(f"/proc/{pid}/cmdline").read_bytes():
            out.append(pid)
    return out


def catalog_trial(env: Env, damage: str) -> None:
    env.run("backup", "--policy", POLICY)  # its end copies the catalog to the stores
    db = env.root / "catalog.db"
    (truncate(db, 4096) if damage == "truncated" else overwrite_page(db, page=3))
    before = db.read_bytes()
    for args in (("backup", "--policy", POLICY), ("prune",), ("points", "list")):
        p = subprocess.run(env.argv(*args), capture_output=True, text=True, timeout=600)
        lines = p.stderr.strip().splitlines()
        if p.returncode != 4 or len(lines) != 1 or str(db) not in lines[0] or "catalog rebuild" not in lines[0]:
            raise Violation(f"damaged: {' '.join(args)} exit {p.returncode}: {p.stderr.strip()[:200]}")
    if db.read_bytes() != before:
        raise Violation("damaged: a command wrote into the damaged catalog")
    env.run("catalog", "restore", "--force")
    env.run("backup", "--policy", POLICY)
    env.check_leftovers()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="about the CI configuration")
    ap.add_argument("--random", type=int, default=4, help="random-moment kills per trial type (backup: 12)")
    ap.add_argument("--stall", type=float, default=60.0, help="seconds the OSD stays stopped")
    ap.add_argument("--only", default="", help="comma-separated trial types")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    n_random = 1 if args.quick else args.random

    backup_points = [
        "after-pending",
        "after-freeze",
        "after-snapshot",
        "after-release",
        "mid-upload@2",
        "mid-upload@10",
        "before-manifest",
        "after-manifest",
    ]
    trials: dict[str, list[tuple[Callable[[Env, Any], None], Any]]] = {
        "backup": [(backup_trial, p) for p in backup_points]
        + [(backup_trial, rng.uniform(0.2, 4.0)) for _ in range(n_random if args.quick else 12)],
        "tier": [(tier_trial, p) for p in ("mid-upload@1", "tier-after-packs", "tier-before-commit")]
        + [(tier_trial, rng.uniform(0.2, 2.0)) for _ in range(n_random)],
        "prune": [(prune_trial, p) for p in ("prune-after-drop", "prune-after-snapshot-removed")]
        + [(prune_trial, rng.uniform(0.2, 1.5)) for _ in range(n_random)],
        "restore-in-place": [
            (restore_in_place_trial, p)
            for p in ("mid-restore-volume@2", "after-restore-volume", "after-container-removed", "after-clone-created")
        ],
        "restore-clone": [
            (restore_clone_trial, p) for p in ("mid-restore-volume@2", "after-restore-volume", "after-clone-created")
        ]
        # a 2 MiB clone restore takes ~1 s in drsvc after ~0.5 s of start-up: kill inside that
        + [(restore_clone_trial, rng.uniform(0.4, 1.6)) for _ in range(n_random)],
        "radosgw-killed": [(radosgw_trial, "mid-upload@1")],
        "osd-stall": [(osd_trial, args.stall if not args.quick else 12.0)],
        "stalled-command": [(stalled_trial, "radosgw"), (stalled_trial, "ceph-osd")],
        "catalog-damage": [(catalog_trial, d) for d in ("truncated", "page overwritten")],
        "20-killed-then-one-cleanup": [(batch_trial, (4, 2) if args.quick else (20, 10))],
    }
    trials.update(faultops.trials(rng, n_random))  # type: ignore[arg-type]
    if args.quick:
        trials["backup"] = trials["backup"][1::2]
    only = [t for t in args.only.split(",") if t] or list(trials)
    # per-tenant data keys only where a trial rotates them; every other trial runs as before
    env = Env(
        desktops=3,
        scope="tenant" if "keys" in only else "",
        runtime="docker" if only == ["docker-backup"] else "podman",
    )
    results: dict[str, list[str]] = defaultdict(list)
    runs: dict[str, int] = defaultdict(int)
    started = time.monotonic()
    try:
        env.run("backup", "--policy", POLICY)
        for kind in only:
            for trial, param in trials[kind]:
                runs[kind] += 1
                label = str(param) if not isinstance(param, float) else f"random {param:.2f} s"
                if isinstance(param, tuple) and isinstance(param[1], float):
                    label = f"{param[0]}, random {param[1]:.2f} s"
                elif isinstance(param, tuple):
                    label = ", ".join(map(str, param))
                t = time.monotonic()
                try:
                    trial(env, param)
                    env.check_tracebacks()
                    print(f"  {kind:17} {label:32} ok ({time.monotonic() - t:.0f} s)", flush=True)
                except NotKilled as e:
                    runs[kind] -= 1
                    print(f"  {kind:17} {label:32} not counted: {e}", flush=True)
                    env.stderr.clear()
                except Violation as v:
                    results[kind].append(f"{label}: {v}")
                    print(f"  {kind:17} {label:32} VIOLATION: {v}", flush=True)
                    env.stderr.clear()
                except Exception as e:  # a broken trial is reported, the suite goes on
                    results[kind].append(f"{label}: trial error {e!r}")
                    print(f"  {kind:17} {label:32} TRIAL ERROR: {e!r}", flush=True)
                    traceback.print_exc()
    finally:
        env.cleanup()
    print(f"\nfault suite ({time.monotonic() - started:.0f} s, budget {BUDGET:g} s):")
    print(f"{'trial type':18} {'runs':>5} {'violations':>10}")
    for kind in only:
        print(f"{kind:18} {runs[kind]:5d} {len(results[kind]):10d}")
        for line in results[kind]:
            print(f"    {line}")
    for line in NUMBERS:
        print(line)
    sys.exit(1 if any(results.values()) else 0)


if __name__ == "__main__":
    main()
