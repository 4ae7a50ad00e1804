"""Kill trials for the commands besides backup, tier, prune and restore (``bench/faults.py`` runs them).

Each trial kills one drsvc command (SIGKILL at a named fault point, or after a random delay), lets
the next run or ``drsvc cleanup`` recover, and checks the suite's invariants (``Env.check_*``)
plus what the command itself promises:

* drill          -- no sandbox clone (container, namespace) left; the drill recorded failed or
                    interrupted, never passed, never still running;
* site-drill     -- ``site drill --from`` killed: as drill (its sandboxes are in a scratch catalog);
* copy           -- the site never holds a point the catalog calls copied that does not verify
                    (``verify --all --site``); the next copy finishes (nothing due afterwards);
* keys           -- keys list, backup and verify work after a killed rotation, and so does the
                    next rotation;
* restore-object -- the restored object is either the old one or the point's, never a mix;
                    nothing else in the namespace changed; the same command then finishes it;
* restore-cold   -- a clone restored from the cold tier: as restore-clone;
* cleanup        -- a cleanup killed while it removes what killed runs left: the next one finishes;
* run            -- ``drsvc run --once`` killed mid-tick: the next tick recovers, nothing is lost;
* docker-backup  -- a backup of Docker desktops killed (run alone: ``--only docker-backup``, its
                    desktops on the lab's dockerd): as backup, and no checkpoint directory
                    (the desktops' memory, in plaintext) is left in dockerd's data root.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import time
from pathlib import Path

from faultenv import POLICY, SITE, Env, NotKilled, Violation
from faultkit import container_exists

BIG = "drsvc-fsbench-big"  # the object the restore-object trials restore: past the 32 MiB of a first write op
BIG_SIZE = 40 * 1024 * 1024


def _kill(env: Env, point: str | float, *args: str) -> None:
    """Kill ``drsvc ARGS`` at the fault point, or after the delay (``NotKilled`` when it ended first)."""
    if isinstance(point, str):
        env.killed_at(point, *args)
        return
    code = env.killed_after(point, *args)
    if code != -9:
        raise NotKilled(f"drsvc {args[0]} ended (exit {code}) within {point:.2f} s")


def _volume(name: str):  # type: ignore[no-untyped-def]
    from drsvc.volumes import open_volume

    return open_volume(f"rados://desktops/{name}")


def _namespace_left(name: str) -> bool:
    return bool(_volume(name).objects_now())


# ---------------------------------------------------------------------- drill
def drill_trial(env: Env, point: str | float) -> None:
    desktop = env.desktops[0]
    env.run("backup", desktop)
    c = env.catalog()
    try:
        last = c.query("SELECT COALESCE(MAX(id), 0) AS n FROM drills")[0]["n"]
    finally:
        c.close()
    drill_id = last + 1
    clone = f"drill-{drill_id}-{desktop}"
    env.namespaces.append(clone)
    _kill(env, point, "drill", desktop)
    env.run("cleanup")
    if container_exists(clone):
        raise Violation(f"leftover: drill clone {clone} after cleanup")
    if _namespace_left(clone):
        raise Violation(f"leftover: drill namespace {clone} after cleanup")
    c = env.catalog()
    try:
        rows = c.query("SELECT status FROM drills WHERE id = ?", [drill_id])
        passed = c.query("SELECT desktop_id FROM drill_results WHERE drill_id = ? AND passed = 1", [drill_id])
    finally:
        c.close()
    if not rows:
        return  # killed before the drill was recorded: nothing to judge but the leftovers
    if rows[0]["status"] not in ("failed", "interrupted"):
        raise Violation(f"drill {drill_id} killed, recorded {rows[0]['status']!r} after cleanup")
    if passed:
        raise Violation(f"drill {drill_id} killed, yet {passed[0]['desktop_id']} recorded passed")
    env.check_leftovers()


# ---------------------------------------------------------------------- copy to the DR site
def _site_copies(env: Env) -> int:
    c = env.catalog()
    try:
        return int(c.query("SELECT COUNT(*) AS n FROM point_sites WHERE site = ?", [SITE])[0]["n"])
    finally:
        c.close()


def copy_trial(env: Env, point: str | float) -> None:
    env.run("backup", "--policy", POLICY)
    time.sleep(1.2)  # tiering.after = 1s
    env.run("tier")
    time.sleep(1.2)  # sites.dr.after = 1s
    _kill(env, point, "copy")
    # at once, before any repair: what the catalog says the site holds must verify there
    code, _ = env.run("verify", "--all", "--site", SITE, ok=(0, 3, 4))
    if code == 3 and _site_copies(env):
        raise Violation("lost: the catalog lists copies at a site that holds no chunk store")
    if code == 4:
        raise Violation("broken: a killed copy left a site copy the catalog lists that does not verify")
    env.run("copy")
    _, out = env.run("--json", "copy", "--dry-run")
    if json.loads(out).get("moves"):
        raise Violation(f"the copy after the killed one left points due: {json.loads(out)['moves'][:2]}")
    code, _ = env.run("verify", "--all", "--site", SITE, ok=(0, 4))
    if code:
        raise Violation("broken: a site copy does not verify after the next copy")
    env.check_leftovers()
    env.check_sound()


# ---------------------------------------------------------------------- site drill
def _sitedrill_namespaces(env: Env) -> list[str]:
    out = subprocess.run(
        ["rados", "-p", "desktops", "ls", "--all", "--format", "json"], capture_output=True, text=True, timeout=120
    ).stdout
    spaces = {o.get("namespace", "") for o in json.loads(out or "[]")}
    return sorted(n for n in spaces if n.startswith("sitedrill-") and env.prefix in n)


def site_drill_trial(env: Env, point: str | float) -> None:
    """``site drill`` killed: no sandbox clone (container, namespace) left, no drill still running."""
    env.run("backup", "--policy", POLICY)
    time.sleep(1.2)
    env.run("tier")
    time.sleep(1.2)
    env.run("copy")
    _kill(env, point, "site", "drill", "--from", SITE, "--policy", POLICY)
    env.run("cleanup")
    spaces = _sitedrill_namespaces(env)
    env.namespaces.extend(spaces)
    clones = [n for n in _container_names() if n.startswith("sitedrill-") and env.prefix in n]
    if clones or spaces:
        raise Violation(f"leftover: site drill sandboxes after cleanup: {(clones + spaces)[:3]}")
    c = env.catalog()
    try:
        running = c.query("SELECT id FROM site_recoveries WHERE status = 'running'")
    finally:
        c.close()
    if running:
        raise Violation(f"leftover: site drills still recorded running {[r['id'] for r in running]}")
    env.check_leftovers()


def _container_names() -> list[str]:
    out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60)
    return out.stdout.split()


# ---------------------------------------------------------------------- keys rotate
def keys_trial(env: Env, point: str | float) -> None:
    env.run("backup", "--policy", POLICY)
    before = env.complete()
    _kill(env, point, "keys", "rotate", "--tenant", "acme")
    env.run("keys", "list")
    env.run("backup", "--policy", POLICY)
    if not before <= env.complete():
        raise Violation("lost: a point after a killed key rotation")
    env.run("keys", "rotate", "--tenant", "acme")
    env.run("backup", "--policy", POLICY)
    env.check_leftovers()
    env.check_sound()


# ---------------------------------------------------------------------- single-object restore
def _digest(volume, name: str) -> str | None:  # type: ignore[no-untyped-def]
    current = volume.stat(name)
    if current is None:
        return None
    h = hashlib.sha256()
    for _obj, data in volume.read_objects([current]):
        for piece in data:
            h.update(piece)
    return h.hexdigest()


def _others(volume, skip: str) -> dict[str, str | None]:  # type: ignore[no-untyped-def]
    """Digests of the namespace's objects but the restored one, its kept copies and the workload's counter."""
    names = [o.name for o in volume.objects_now() if not o.name.startswith(skip) and o.name != "counter"]
    return {n: _digest(volume, n) for n in names}


def restore_object_trial(env: Env, param: tuple[str, str | float]) -> None:
    mode, point = param
    from drsvc.volumes.base import VolumeObject

    desktop = env.desktops[1]
    volume = _volume(desktop)
    volume.remove_objects([o.name for o in volume.objects_now() if o.name.startswith(BIG)])  # an earlier trial's
    old, new = os.urandom(BIG_SIZE), os.urandom(BIG_SIZE)
    volume.write_objects([(VolumeObject(BIG, BIG_SIZE), iter([old]))], exact=False)
    env.run("backup", desktop)
    volume.write_objects([(VolumeObject(BIG, BIG_SIZE), iter([new]))], exact=False)
    want = {hashlib.sha256(old).hexdigest(): "the point's", hashlib.sha256(new).hexdigest(): "the current"}
    others = _others(volume, BIG)
    args = ("restore", desktop, "--object", BIG) + (("--overwrite",) if mode == "overwrite" else ())
    try:
        if point == "mid-object-write":  # between the object's write ops, once the first one landed
            if not env.killed_inside(point, *args):
                raise NotKilled("the object was written in one operation: never between two")
        else:
            _kill(env, point, *args)
    finally:
        got = _digest(volume, BIG)
        for kept in [o.name for o in volume.objects_now() if o.name.startswith(BIG + ".drsvc-")]:
            if _digest(volume, kept) not in want:
                raise Violation(f"half: the kept copy {kept} is neither the old object nor the point's")
    if got not in want:
        raise Violation(f"half: {BIG} is neither the current object nor the point's after the kill ({mode})")
    if _others(volume, BIG) != others:
        raise Violation("touched: objects besides the restored one changed")
    env.run("cleanup")
    env.run(*args)  # the same command again finishes it
    if _digest(volume, BIG) != hashlib.sha256(old).hexdigest():
        raise Violation("the restore run again did not bring the point's object back")
    env.check_leftovers()
    volume.remove_objects([o.name for o in volume.objects_now() if o.name.startswith(BIG)])


# ---------------------------------------------------------------------- restore from the cold tier
def restore_cold_trial(env: Env, point: str | float) -> None:
    desktop = env.desktops[0]
    env.run("backup", desktop)
    time.sleep(1.2)
    env.run("tier")
    clone = f"{desktop}-clone{random.randrange(10**6)}"
    env.namespaces.append(clone)
    code = None
    if isinstance(point, str):
        env.killed_at(point, "restore", desktop, "--as", clone, "--tier", "cold")
    else:
        code = env.killed_after(point, "restore", desktop, "--as", clone, "--tier", "cold")
    if code is not None and env.finished_clone(clone):  # done before the kill (or killed on its way out)
        env.drop_clone(clone)
        raise NotKilled(f"restore finished in under {point:.2f} s")
    env.run("cleanup")
    if container_exists(clone):
        raise Violation(f"leftover: clone {clone} after cleanup")
    if _namespace_left(clone):
        raise Violation(f"leftover: namespace {clone} after cleanup")
    env.check_leftovers()


# ---------------------------------------------------------------------- cleanup killed itself
def cleanup_trial(env: Env, point: str | float) -> None:
    """Leftovers of two killed restores and a killed backup; the cleanup removing them is killed."""
    desktop = env.desktops[0]
    env.run("backup", desktop)
    clones = [f"{desktop}-clone{random.randrange(10**6)}" for _ in range(2)]
    env.namespaces.extend(clones)
    env.killed_at("after-clone-created", "restore", desktop, "--as", clones[0])
    env.killed_at("after-restore-volume", "restore", desktop, "--as", clones[1])
    env.killed_at("after-snapshot", "backup", "--policy", POLICY)
    time.sleep(0.6)
    _kill(env, point, "cleanup")
    env.run("cleanup")
    for clone in clones:
        if container_exists(clone):
            raise Violation(f"leftover: clone {clone} after the cleanup that followed a killed one")
        if _namespace_left(clone):
            raise Violation(f"leftover: namespace {clone} after the cleanup that followed a killed one")
    env.check_leftovers()
    env.check_sound()


# ---------------------------------------------------------------------- the scheduler's tick
def run_trial(env: Env, point: str | float) -> None:
    """``run --once`` with the policy's backup due (its window forgotten), killed mid-tick."""

    def due() -> None:
        c = env.catalog()
        try:
            c.execute("DELETE FROM schedule_state WHERE policy = ?", [POLICY])
        finally:
            c.close()

    before = env.complete()
    due()
    _kill(env, point, "run", "--once")
    due()
    env.run("run", "--once")
    if not before <= env.complete():
        raise Violation(f"lost: {sorted(before - env.complete())[:3]}")
    env.check_leftovers()
    env.check_sound()


# ---------------------------------------------------------------------- Docker backup
def _docker_checkpoints(env: Env) -> list[str]:
    """drsvc's checkpoint directories (``drsvc-<12 hex>``) under the env's Docker desktops."""
    from drsvc.runtimes.docker.paths import BACKUP_CHECKPOINT

    def docker(*args: str) -> str:
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout.strip()

    root = Path(docker("info", "--format", "{{.DockerRootDir}}"))
    left = []
    for desktop in env.desktops:
        cid = docker("inspect", "--format", "{{.Id}}", desktop)
        with_dirs = root / "containers" / cid / "checkpoints"
        if with_dirs.is_dir():
            left += [f"{desktop}/{p.name}" for p in with_dirs.iterdir() if BACKUP_CHECKPOINT.fullmatch(p.name)]
    return left


def docker_backup_trial(env: Env, point: str | float) -> None:
    if env.runtime != "docker":
        raise RuntimeError("docker-backup needs the Docker environment: run it alone (--only docker-backup)")
    before = env.complete()
    _kill(env, point, "backup", "--policy", POLICY)
    time.sleep(0.6)
    env.run("backup", "--policy", POLICY)  # the next run: cleans up, then works
    if not before <= env.complete():
        raise Violation(f"lost: {sorted(before - env.complete())[:3]}")
    env.check_leftovers()
    left = _docker_checkpoints(env)
    if left:
        raise Violation(f"leftover: Docker checkpoint directories {left[:3]} after the next backup and cleanup")
    env.check_sound()


def trials(rng: random.Random, n_random: int) -> dict[str, list[tuple[object, object]]]:
    """The trial types of this module: named fault points first, then random moments."""

    def moments(lo: float, hi: float) -> list[float]:
        return [rng.uniform(lo, hi) for _ in range(n_random)]

    return {
        "drill": [(drill_trial, p) for p in ("mid-restore-volume@2", "after-restore-volume", "after-clone-created")]
        + [(drill_trial, t) for t in moments(0.4, 1.6)],
        "copy": [(copy_trial, p) for p in ("mid-upload@1", "mid-upload@4")]
        + [(copy_trial, t) for t in moments(0.4, 2.0)],
        "site-drill": [(site_drill_trial, p) for p in ("mid-restore-volume@2", "after-clone-created")]
        + [(site_drill_trial, t) for t in moments(1.0, 5.0)],
        "keys": [(keys_trial, "mid-upload@1")] + [(keys_trial, t) for t in moments(0.2, 0.45)],
        "restore-object": [
            (restore_object_trial, ("overwrite", "mid-object-write")),
            (restore_object_trial, ("keep", "mid-object-write")),
            (restore_object_trial, ("keep", "mid-restore-volume@2")),  # after its kept copy
        ]
        + [(restore_object_trial, ("overwrite", t)) for t in moments(0.3, 0.8)]
        + [(restore_object_trial, ("keep", t)) for t in moments(0.3, 0.9)],
        "restore-cold": [
            (restore_cold_trial, p) for p in ("mid-restore-volume@2", "after-restore-volume", "after-clone-created")
        ]
        + [(restore_cold_trial, t) for t in moments(0.4, 1.3)],
        "cleanup": [(cleanup_trial, "prune-after-snapshot-removed")] + [(cleanup_trial, t) for t in moments(0.2, 0.5)],
        "run": [(run_trial, p) for p in ("after-snapshot", "mid-upload@3", "tier-after-packs")]
        + [(run_trial, t) for t in moments(0.5, 6.0)],
        "docker-backup": [(docker_backup_trial, p) for p in ("after-freeze", "after-snapshot", "after-release")]
        + [(docker_backup_trial, t) for t in moments(0.3, 1.4)],
    }
