"""The fault suite, small configuration (CI): stalls, kills and damage on the real lab.

Each trial asserts the invariants of issue "fail safe and fail loud": no desktop frozen past its
freeze budget, no complete-but-broken point, no earlier point lost, no leftover after the next
run, no traceback. The full configuration (more runs, random kill moments, longer stalls) is
``bench/faults.py``; it prints runs and violations per trial type.

Stopping the OSD or radosgw happens only here, under the lab lock the caller holds, and is always
undone in a ``finally``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from faultkit import Watcher, container_exists, drsvc_snapshots, osd_stopped, wait_for

from drsvc.catalog import Catalog

pytestmark = [pytest.mark.fault, pytest.mark.slow]

BUDGET = 3.0  # seconds: the policies' freeze_timeout in these trials
# Shorter than the PGs' 16 s read lease in CI (a longer stop needs a forced re-peer after it);
# bench/faults.py stops it for 60 s.
OSD_STALL = float(os.environ.get("DRSVC_FAULT_OSD_STALL", "12"))


def _catalog(env) -> Catalog:
    return Catalog.open(env.root / "catalog.db")


def _snapshot_story(env) -> str:
    """Every pool snapshot row with its job and points, for a failure message."""
    catalog = _catalog(env)
    try:
        rows = catalog.query(
            "SELECT s.name, s.removed_at, j.status AS job, group_concat(p.status) AS points FROM pool_snapshots s "
            "LEFT JOIN jobs j ON j.id = s.job_id LEFT JOIN points p ON p.pool_snapshot_id = s.id GROUP BY s.id"
        )
    finally:
        catalog.close()
    return "\n".join(str(r) for r in rows)


def test_an_osd_stalled_during_the_freeze_thaws_the_desktops_at_the_budget(drsvc_env, make_fleet, tmp_path):
    desktops = make_fleet(3)
    policy = f"stall{os.getpid()}"
    drsvc_env.policy(policy, desktops, capture={"freeze_timeout": f"{BUDGET:g}s"})
    drsvc_env.write("[timeouts]\nceph_seconds = 10\n")
    first = drsvc_env.cli("--json", "backup", "--policy", policy)
    assert first.code == 0, first.output
    earlier = {r["point_id"] for r in first.json()["results"]}

    go = tmp_path / "go"
    env = {**os.environ, "DRSVC_FAULT": f"after-freeze:wait={go}"}
    with Watcher(desktops) as watch:
        proc = drsvc_env.subprocess("--json", "backup", "--policy", policy, env=env)
        wait_for(Path(f"{go}.reached"), 120, proc)  # every desktop of the batch stands frozen now
        with osd_stopped():
            go.touch()
            stalled_at = time.monotonic()
            try:
                out, err = proc.communicate(timeout=OSD_STALL)
                gave_up = time.monotonic() - stalled_at
            except Exception:
                out = err = ""
                gave_up = None
            time.sleep(max(0.0, OSD_STALL - (time.monotonic() - stalled_at)))
        if gave_up is None:
            out, err = proc.communicate(timeout=300)
            gave_up = time.monotonic() - stalled_at
    print(
        f"OSD stalled {OSD_STALL:g} s during the freeze: backup gave up after {gave_up:.1f} s; "
        f"desktops still at most {max(watch.still.values()):.2f} s (budget {BUDGET:g} s)"
    )

    assert "Traceback" not in err, err
    assert proc.returncode != 0, f"a backup whose pool snapshot never completed exited 0:\n{out}\n{err}"
    doc = json.loads(out)
    for r in doc["results"]:
        assert not (r["status"] == "complete" and r["consistency"] == "paired"), r
        assert r["status"] == "failed" and "freeze budget" in (r["error"] or ""), r
        assert r["freeze_ms"] is not None and r["freeze_ms"] <= BUDGET * 1000, r
    for d in desktops:
        # seen from outside: the counter moved again within the budget (plus one 0.2 s tick)
        assert watch.longest_still(d) <= BUDGET + 0.5, f"{d} stood still {watch.longest_still(d):.2f} s"

    # the OSD is back: nothing earlier was lost, the next run pairs again and leaves nothing behind
    again = drsvc_env.cli("--json", "backup", "--policy", policy)
    assert again.code == 0, again.output
    assert {(r["status"], r["consistency"]) for r in again.json()["results"]} == {("complete", "paired")}
    catalog = _catalog(drsvc_env)
    try:
        assert {p["id"] for p in catalog.points(status="complete")} >= earlier
    finally:
        catalog.close()
    assert drsvc_env.cli("prune").code == 0
    catalog = _catalog(drsvc_env)
    try:
        live = {r["name"] for r in catalog.query("SELECT name FROM pool_snapshots WHERE removed_at IS NULL")}
    finally:
        catalog.close()
    ours = {s for s in drsvc_snapshots() if s.startswith(f"drsvc-{policy}-")}
    assert ours == live, f"pool snapshots left behind: {sorted(ours - live)}"


# ---------------------------------------------------------------------- kill -9 at named moments
def _killed(env, point: str, *args: str) -> None:
    """Run ``drsvc ARGS`` and SIGKILL it (itself, through DRSVC_FAULT) the moment it reaches ``point``."""
    name, _, hit = point.partition("@")
    fault = f"{name}:kill" + (f"@{hit}" if hit else "")
    proc = env.subprocess(*args, env={**os.environ, "DRSVC_FAULT": fault})
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == -9, (
        f"drsvc {' '.join(args)} never reached {point} (exit {proc.returncode}):\n{out}\n{err}"
    )


BACKUP_KILLS = ("after-freeze", "after-snapshot", "mid-upload@3", "after-manifest")


def test_killed_backups_lose_nothing_earlier_and_leave_nothing_after_the_next_run(drsvc_env, make_fleet):
    desktops = make_fleet(2)
    policy = f"kill{os.getpid()}"
    drsvc_env.policy(policy, desktops, capture={"freeze_timeout": f"{BUDGET:g}s"})
    first = drsvc_env.cli("--json", "backup", "--policy", policy)
    assert first.code == 0, first.output
    earlier = {r["point_id"] for r in first.json()["results"]}
    for point in BACKUP_KILLS:
        with Watcher(desktops) as watch:
            _killed(drsvc_env, point, "backup", "--policy", policy)
            time.sleep(1.0)  # the desktops must move again at once: the hook saw its owner die
        for d in desktops:
            assert watch.longest_still(d) <= BUDGET + 0.5, f"{d} stood still {watch.longest_still(d):.2f} s ({point})"
    again = drsvc_env.cli("--json", "backup", "--policy", policy)  # the next run cleans up first
    assert again.code == 0 and "Traceback" not in again.stderr, again.output
    assert drsvc_env.cli("prune").code == 0

    catalog = _catalog(drsvc_env)
    try:
        complete = {p["id"] for p in catalog.points(status="complete")}
        assert earlier <= complete, "a killed backup lost an earlier point"
        assert not catalog.points(status="pending")
        live = {r["name"] for r in catalog.query("SELECT name FROM pool_snapshots WHERE removed_at IS NULL")}
    finally:
        catalog.close()
    ours = {s for s in drsvc_snapshots() if s.startswith(f"drsvc-{policy}-")}
    assert ours == live, f"pool snapshots left behind: {sorted(ours - live)}\n{_snapshot_story(drsvc_env)}"
    verify = drsvc_env.cli("verify", "--all")  # no complete point is broken
    assert verify.code == 0, verify.output
    check = drsvc_env.cli("catalog", "check")
    assert check.code == 0, check.output


CLONE_KILLS = ("mid-restore-volume@2", "after-restore-volume", "after-clone-created")


def test_killed_clone_restores_leave_nothing_after_cleanup(drsvc_env, make_fleet):
    [desktop] = make_fleet(1)
    assert drsvc_env.cli("backup", desktop).code == 0
    clones = [f"{desktop}-clone{n}" for n in range(len(CLONE_KILLS))]
    services = drsvc_env.services()
    try:
        for clone, point in zip(clones, CLONE_KILLS, strict=True):
            _killed(drsvc_env, point, "restore", desktop, "--as", clone)
        assert any(container_exists(c) for c in clones), "no kill left a clone: the trial tested nothing"
        result = drsvc_env.cli("--json", "cleanup")
        assert result.code == 0, result.output
        for clone in clones:
            assert not container_exists(clone), f"clone container {clone} left behind"
            assert services.volume(f"rados://desktops/{clone}").objects_now() == [], f"namespace {clone} left"
        catalog = _catalog(drsvc_env)
        try:
            assert not catalog.query("SELECT id FROM restores WHERE status = 'running'")
        finally:
            catalog.close()
        # and the same command works again (it was refused: the name was taken)
        again = drsvc_env.cli("restore", desktop, "--as", clones[-1])
        assert again.code in (0, 5), again.output
        assert container_exists(clones[-1])
    finally:
        for clone in clones:
            subprocess.run(["podman", "rm", "-f", "-t", "0", clone], capture_output=True, timeout=120)
            services.volume(f"rados://desktops/{clone}").purge()


def test_a_failed_clone_restore_leaves_what_another_writer_put_in_its_namespace(drsvc_env, make_fleet, rados_cluster):
    """Real RADOS: someone writes into the clone's namespace after the plan found it empty, one object
    under a name the restore writes too. The restore fails there; its teardown removes the objects it
    wrote and nothing of the other writer's."""
    from drsvc.errors import DrsvcError
    from drsvc.restore import RestoreJob

    [desktop] = make_fleet(1)
    assert drsvc_env.cli("backup", desktop).code == 0
    clone = f"{desktop}-raced"
    services = drsvc_env.services()
    io = rados_cluster.open_ioctx("desktops")
    io.set_namespace(clone)
    try:
        said: list[str] = []
        job = RestoreJob(services, on_event=lambda kind, **f: said.append(f["message"]) if kind == "teardown" else None)
        plan = job.plan(desktop, as_name=clone)
        assert plan.target.empty
        names = sorted(o["name"] for o in plan.manifest["volume"]["objects"])
        theirs = {names[len(names) // 2]: b"written by someone else", "not-drsvcs": b"an operator's note"}
        for name, data in theirs.items():
            io.write_full(name, data)
        with pytest.raises(DrsvcError, match="the object exists"):
            job.run(plan)
        # at head (a listing also shows what pool snapshots still hold)
        left = {o.name: io.read(o.name, 1 << 20) for o in services.volume(f"rados://desktops/{clone}").objects_now()}
        assert left == theirs, f"the teardown removed another writer's objects or left its own: {sorted(left)}"
        assert len(said) == 1 and "2 object(s)" in said[0] and "did not write" in said[0], said
        assert not container_exists(clone)
    finally:
        services.volume(f"rados://desktops/{clone}").purge()
        io.close()


def test_a_killed_clone_restores_cleanup_leaves_what_another_writer_put_in_its_namespace(
    drsvc_env, make_fleet, rados_cluster, tmp_path
):
    """Real RADOS, kill -9: after the plan found the clone's namespace empty, someone writes there, one
    object under a name the restore would write later. The restore is killed mid-volume; cleanup
    removes the objects it wrote and nothing of the other writer's (the intent names them all)."""
    from drsvc.restore import RestoreJob

    [desktop] = make_fleet(1)
    assert drsvc_env.cli("backup", desktop).code == 0
    clone = f"{desktop}-killraced"
    services = drsvc_env.services()
    volume = services.volume(f"rados://desktops/{clone}")
    io = rados_cluster.open_ioctx("desktops")
    io.set_namespace(clone)
    try:
        plan = RestoreJob(services).plan(desktop, as_name=clone)
        names = [o["name"] for o in plan.manifest["volume"]["objects"]]  # the order it writes them in
        assert len(names) >= 6, names
        go = tmp_path / "go"
        # wait before the 3rd object, then die before the 5th: names[-1] is never written by it
        fault = f"mid-restore-volume:wait={go}@3,mid-restore-volume:kill@5"
        proc = drsvc_env.subprocess("restore", desktop, "--as", clone, env={**os.environ, "DRSVC_FAULT": fault})
        wait_for(Path(f"{go}.reached"), 300, proc)
        theirs = {names[-1]: b"written by someone else", "not-drsvcs": b"an operator's note"}
        for name, data in theirs.items():
            io.write_full(name, data)
        go.touch()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == -9, f"the restore was not killed (exit {proc.returncode}):\n{out}\n{err}"
        written = {o.name for o in volume.objects_now()} - set(theirs)
        assert written, "the killed restore wrote nothing: the trial tested nothing"

        result = drsvc_env.cli("--json", "cleanup")
        assert result.code == 0 and "Traceback" not in result.stderr, result.output
        left = {o.name: io.read(o.name, 1 << 20) for o in volume.objects_now()}
        assert left == theirs, f"cleanup removed another writer's objects or left the restore's: {sorted(left)}"
        assert not container_exists(clone)
    finally:
        volume.purge()
        io.close()


def test_a_killed_clone_restores_cleanup_leaves_a_container_it_did_not_make(drsvc_env, make_fleet):
    """kill -9 once the clone runs; then its container is replaced by another with the same clone labels
    (a restore of the same name by another process). Cleanup removes the killed restore's objects, and
    not the container it did not make."""
    [desktop] = make_fleet(1)
    assert drsvc_env.cli("backup", desktop).code == 0
    clone = f"{desktop}-killswap"
    services = drsvc_env.services()
    volume = services.volume(f"rados://desktops/{clone}")
    try:
        _killed(drsvc_env, "after-clone-created", "restore", desktop, "--as", clone)
        assert container_exists(clone), "the kill left no clone: the trial tested nothing"
        image = subprocess.run(
            ["podman", "inspect", "--format", "{{.ImageName}}", clone], capture_output=True, text=True, check=True
        ).stdout.strip()
        subprocess.run(["podman", "rm", "-f", "-t", "0", clone], capture_output=True, check=True, timeout=120)
        labels = {"drsvc.desktop": clone, "drsvc.volume": f"rados://desktops/{clone}", "drsvc.clone-of": desktop}
        flags = [x for k, v in labels.items() for x in ("--label", f"{k}={v}")]
        subprocess.run(
            ["podman", "create", "--name", clone, *flags, image, "sleep", "600"], capture_output=True, check=True
        )
        assert volume.objects_now(), "the killed restore left no object: the trial tested nothing"

        result = drsvc_env.cli("--json", "cleanup")
        assert result.code == 0 and "Traceback" not in result.stderr, result.output
        assert container_exists(clone), "cleanup removed a container the killed restore did not make"
        assert volume.objects_now() == [], "cleanup left the killed restore's objects"
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", clone], capture_output=True, timeout=120)
        volume.purge()


def test_a_killed_in_place_restore_is_visible_and_the_same_command_resumes_it(drsvc_env, make_fleet):
    [desktop] = make_fleet(1)
    assert drsvc_env.cli("backup", desktop).code == 0
    _killed(drsvc_env, "after-container-removed", "restore", desktop, "--force")
    assert not container_exists(desktop), "the trial did not leave the desktop down"
    listed = drsvc_env.cli("points", "list", desktop)
    assert "interrupted" in listed.stdout and f"drsvc restore {desktop}" in listed.stdout, listed.output
    check = drsvc_env.cli("--json", "cleanup", "--dry-run")
    assert check.code == 0 and check.json()["interrupted_restores"], check.output

    resumed = drsvc_env.cli("restore", desktop, "--force")
    assert resumed.code in (0, 5), resumed.output
    assert "resuming the interrupted in-place restore" in resumed.stderr, resumed.output
    assert container_exists(desktop)
    assert "interrupted" not in drsvc_env.cli("points", "list", desktop).stdout


# ---------------------------------------------------------------------- single-object restore, killed
BIG = 40 * 1024 * 1024  # past the 32 MiB a first write op carries: several ops unless written whole


def _sha(volume: Any, name: str) -> str | None:
    current = volume.stat(name)
    if current is None:
        return None
    return hashlib.sha256(b"".join(p for _o, data in volume.read_objects([current]) for p in data)).hexdigest()


def _killed_between_writes(env: Any, tmp_path: Path, *args: str) -> bool:
    """Hold ``drsvc ARGS`` where an object's first write op is sent and the next piece is due, let
    that op land, SIGKILL it; False when it never got there (the object went in one operation)."""
    go = tmp_path / "go"
    proc = env.subprocess(*args, env={**os.environ, "DRSVC_FAULT": f"mid-object-write:wait={go}"})
    reached = Path(f"{go}.reached")
    while not reached.exists() and proc.poll() is None:
        time.sleep(0.005)
    if reached.exists():
        time.sleep(0.5)
        proc.kill()
    _out, err = proc.communicate(timeout=300)
    assert "Traceback" not in err, err
    return proc.returncode == -9


@pytest.mark.parametrize("mode", ["overwrite", "keep"])
def test_a_killed_object_restore_leaves_the_old_object_or_the_points_never_half(drsvc_env, make_fleet, tmp_path, mode):
    from drsvc.volumes.base import VolumeObject

    [desktop] = make_fleet(1)
    volume = drsvc_env.services().volume(f"rados://desktops/{desktop}")
    old, new = os.urandom(BIG), os.urandom(BIG)
    volume.write_objects([(VolumeObject("big", BIG), iter([old]))], exact=False)
    assert drsvc_env.cli("backup", desktop).code == 0
    volume.write_objects([(VolumeObject("big", BIG), iter([new]))], exact=False)
    whole = {hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()}
    args = ("restore", desktop, "--object", "big") + (("--overwrite",) if mode == "overwrite" else ())

    killed = _killed_between_writes(drsvc_env, tmp_path, *args)
    print(f"{mode}: {'killed between two writes of an object' if killed else 'every object went in one write'}")
    for o in volume.objects_now():
        if o.name.startswith("big"):
            assert _sha(volume, o.name) in whole, f"{o.name} is part old, part new after a kill -9"
    assert drsvc_env.cli("cleanup").code == 0
    again = drsvc_env.cli(*args)  # the same command finishes it
    assert again.code == 0, again.output
    assert _sha(volume, "big") == hashlib.sha256(old).hexdigest()
    catalog = _catalog(drsvc_env)
    try:
        assert not catalog.query("SELECT id FROM object_restores WHERE status = 'running'")
    finally:
        catalog.close()


def test_a_killed_drill_leaves_no_sandbox_and_is_recorded_interrupted(drsvc_env, make_fleet):
    [desktop] = make_fleet(1)
    assert drsvc_env.cli("backup", desktop).code == 0
    _killed(drsvc_env, "after-clone-created", "drill", desktop)
    catalog = _catalog(drsvc_env)
    try:
        [drill] = catalog.query("SELECT id, status FROM drills")
        clone = f"drill-{drill['id']}-{desktop}"
        services = drsvc_env.services()
        try:
            assert container_exists(clone), "the trial did not leave a sandbox"
            assert drsvc_env.cli("cleanup").code == 0
            assert not container_exists(clone), f"sandbox {clone} left after cleanup"
            assert services.volume(f"rados://desktops/{clone}").objects_now() == [], f"namespace {clone} left"
        finally:
            subprocess.run(["podman", "rm", "-f", "-t", "0", clone], capture_output=True, timeout=120)
            services.volume(f"rados://desktops/{clone}").purge()
        [row] = catalog.query("SELECT status FROM drills")
        assert row["status"] == "interrupted", f"a killed drill is recorded {row['status']!r}"
        assert not catalog.query("SELECT 1 FROM drill_results WHERE passed = 1")
    finally:
        catalog.close()
    check = drsvc_env.cli("catalog", "check")
    assert check.code == 0, check.output
