"""Backups on the real lab: paired points, scheduling, concurrency, prune, kill -9, corruption."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tarfile
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import pytest
from runtime_suite import read_counter, wait_counter_above
from waits import finish, wait_for

from drsvc import clock, faults
from drsvc.catalog import Catalog
from drsvc.chunks import StreamRef, chunk_key
from drsvc.errors import IntegrityError, NotFound
from drsvc.prune import referenced_by_manifests
from drsvc.scheduler import Scheduler


def _points(env, desktop: str, status: str | None = None) -> list[dict]:
    catalog = Catalog.open(env.root / "catalog.db")
    try:
        return catalog.points(desktop, status=status)
    finally:
        catalog.close()


def _lssnap() -> str:
    return subprocess.run(["rados", "-p", "desktops", "lssnap"], capture_output=True, text=True, check=True).stdout


def _counter(services, desktop: str) -> str:
    return b"".join(services.volume(f"rados://desktops/{desktop}").read("counter")).decode().strip()


def _counter_or_none(services, desktop: str) -> str | None:
    try:
        return _counter(services, desktop)
    except NotFound:
        return None


def _memory_counter(archive: BinaryIO, boot: str) -> int:
    """The desktop workload's in-memory counter, found in the checkpoint's memory pages."""
    marker = re.compile(rb"<" + re.escape(boot.encode()) + rb">:(\d{10})")
    found = set()
    with tarfile.open(fileobj=archive, mode="r|") as tar:
        for member in tar:
            if member.name.startswith("checkpoint/pages-") and member.isfile():
                found.update(int(m.group(1)) for m in marker.finditer(tar.extractfile(member).read()))
    assert len(found) == 1, f"expected one in-memory counter, found {found}"
    return found.pop()


@pytest.mark.slow
def test_point_pairs_memory_and_volume_at_the_same_instant(drsvc_env, make_fleet):
    """The desktop-image workload keeps a counter in memory and writes it into RADOS every tick
    (memory advances only once the write succeeded). The counter in the point's checkpoint (its
    memory pages) equals the counter object in the point's pool snapshot: same instant (up to
    the one write that may be in flight when the desktop freezes)."""
    [desktop] = make_fleet(1, image="desktop")
    services = drsvc_env.services()
    first = int(wait_for("the workload's first tick on disk", lambda: _counter_or_none(services, desktop)).split()[0])
    wait_for("a few ticks on disk", lambda: int(_counter(services, desktop).split()[0]) >= first + 3)
    result = drsvc_env.cli("--json", "backup", desktop)
    assert result.code == 0, result.output
    [outcome] = result.json()["results"]
    assert (outcome["status"], outcome["consistency"]) == ("complete", "paired"), outcome
    assert outcome["freeze_ms"] > 0

    manifest = services.hot.get_manifest(desktop, outcome["point_id"])
    snap = manifest["volume"]["pool_snapshot"]
    volume = services.volume(manifest["volume"]["url"])
    on_disk, boot = b"".join(volume.read_at(snap, "counter")).decode().split()
    in_memory = _memory_counter(services.hot.open_stream(StreamRef.from_dict(manifest["checkpoint"]["stream"])), boot)
    # Equal, or the snapshot one ahead when the freeze caught a write in flight: the OSD applied
    # it but the frozen process had not seen the reply yet (after a restore librados re-sends it
    # and the OSD answers it as a duplicate). A capture that is not paired differs by many ticks:
    # a backup takes seconds and the workload writes five times a second.
    assert int(on_disk) - in_memory in (0, 1), f"memory {in_memory} vs volume snapshot {on_disk}"
    # and the chunk store holds exactly the snapshot's object
    data = b"".join(services.hot.read_stream(StreamRef.from_dict(manifest["volume"]["stream"])))
    offset = 0
    for obj in manifest["volume"]["objects"]:
        if obj["name"] == "counter":
            assert data[offset : offset + obj["size"]].decode().split() == [on_disk, boot]
        offset += obj["size"]
    # the desktop kept running (and counting) through the backup
    wait_for("the desktop to count on", lambda: int(_counter(services, desktop).split()[0]) > in_memory)


def test_run_once_across_a_schedule_boundary_takes_two_points(drsvc_env, make_fleet):
    [desktop] = make_fleet(1)
    drsvc_env.policy("every-minute", [desktop], schedule="* * * * *")
    services = drsvc_env.services()
    scheduler = Scheduler(services)
    t0 = clock.now().replace(second=5, microsecond=0)
    first = scheduler.tick(now=t0)
    assert [d.policy for d in first.due] == ["every-minute"]
    assert scheduler.tick(now=t0 + timedelta(seconds=40)).due == []  # same window: nothing
    second = scheduler.tick(now=t0 + timedelta(seconds=60))
    assert [d.policy for d in second.due] == ["every-minute"]
    points = _points(drsvc_env, desktop, "complete")
    assert len(points) == 2
    assert {p["policy"] for p in points} == {"every-minute"}
    # missed windows run once: an hour later is one run, not sixty
    third = scheduler.tick(now=t0 + timedelta(hours=1))
    assert len(third.due) == 1 and third.due[0].missed == 59
    assert len(_points(drsvc_env, desktop, "complete")) == 3


def test_concurrent_run_once_take_one_point(drsvc_env, make_fleet, tmp_path):
    """Two `run --once` started together; the one holding the lease is parked at the fault point
    after-pending (its desktop recorded, nothing frozen) until the other has ended, so the other
    ran while the lease was held and must have been refused: one after the other, both would
    succeed, the second saying "nothing due"."""
    [desktop] = make_fleet(1)
    drsvc_env.policy("hourly", [desktop])
    go, log = tmp_path / "go", tmp_path / "faults.log"
    env = {**os.environ, faults.ENV: f"after-pending:wait={go}", faults.LOG_ENV: str(log)}
    procs = [drsvc_env.subprocess("run", "--once", env=env) for _ in range(2)]
    try:
        wait_for("one run to hold the lease and reach after-pending", lambda: Path(f"{go}.reached").exists())
        (parked,) = {pid for point, _, pid in faults.hits(log) if point == "after-pending"}
        [loser] = [p for p in procs if p.pid != parked]
        code, out, err = finish(loser, "the refused run")
        assert [p.poll() for p in procs if p.pid == parked] == [None], "not concurrent: the first had ended"
        assert code == 0 and "skipped: another drsvc run holds the 'work' lease" in out, out + err
    finally:
        go.touch()
    [winner] = [p for p in procs if p.pid == parked]
    code, out, err = finish(winner, "the working run", timeout=300)
    assert code == 0 and "ran: backup hourly exit 0" in out, out + err
    assert [p["status"] for p in _points(drsvc_env, desktop)] == ["complete"]


def test_prune_removes_a_pool_snapshot_once_no_hot_point_needs_it(drsvc_env, make_fleet):
    [desktop] = make_fleet(1)
    drsvc_env.policy("keep-one", [desktop], retention={"hot": {"last": 1}})
    first = drsvc_env.cli("--json", "backup", "--policy", "keep-one")
    second = drsvc_env.cli("--json", "backup", "--policy", "keep-one")
    assert first.code == second.code == 0
    snap1, snap2 = first.json()["pool_snapshots"][0], second.json()["pool_snapshots"][0]
    assert snap1 in _lssnap() and snap2 in _lssnap()

    dry = drsvc_env.cli("--json", "prune", "--dry-run")
    assert [d["point_id"] for d in dry.json()["dropped"]] == [first.json()["results"][0]["point_id"]]
    assert snap1 in _lssnap()  # a dry run changes nothing

    pruned = drsvc_env.cli("--json", "prune")
    assert pruned.code == 0, pruned.output
    assert pruned.json()["snapshots_removed"] == [snap1]
    assert snap1 not in _lssnap() and snap2 in _lssnap()
    statuses = {p["id"]: p["status"] for p in _points(drsvc_env, desktop)}
    assert statuses == {
        first.json()["results"][0]["point_id"]: "expired",
        second.json()["results"][0]["point_id"]: "complete",
    }


@pytest.mark.parametrize("moment", ["after-freeze", "mid-upload"])
def test_kill_9_mid_backup_keeps_earlier_points_and_the_next_run_cleans_up(drsvc_env, make_fleet, moment):
    """kill -9 at a named moment (drsvc.faults): with the desktop frozen, or between chunk uploads."""
    [desktop] = make_fleet(1, data_mib=4)
    assert drsvc_env.cli("backup", desktop).code == 0
    [earlier] = _points(drsvc_env, desktop, "complete")

    point, _, hit = moment.partition("@")
    spec = f"{point}:kill" + (f"@{hit}" if hit else "")
    proc = drsvc_env.subprocess("backup", desktop, env={**os.environ, faults.ENV: spec})
    code, out, err = finish(proc, f"the backup killed at {moment}")
    assert code == -signal.SIGKILL, f"not killed at {moment} (exit {code}): {out}{err}"
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    [pending] = catalog.points(desktop, status="pending")
    assert catalog.point(earlier["id"])["status"] == "complete"
    catalog.close()

    # a desktop frozen when drsvc died is let go by the hook (its owner lock is free): it counts on
    runtime = drsvc_env.services().runtime
    count, _ = read_counter(runtime, desktop)
    wait_counter_above(runtime, desktop, count)

    again = drsvc_env.cli("--json", "backup", desktop)
    assert again.code == 0, again.output
    statuses = {p["id"]: (p["status"], p["reason"]) for p in _points(drsvc_env, desktop)}
    assert statuses[earlier["id"]][0] == "complete"
    assert statuses[pending["id"]][0] == "failed" and "interrupted" in statuses[pending["id"]][1]
    assert statuses[again.json()["results"][0]["point_id"]][0] == "complete"

    for _ in range(2):  # mark, then sweep (grace 0 in this config)
        assert drsvc_env.cli("prune").code == 0
    hot = drsvc_env.services().hot
    assert set(hot.list_chunk_ids()) == referenced_by_manifests(hot)


def test_a_flipped_bit_in_a_hot_chunk_is_detected_on_read(drsvc_env, make_fleet):
    [desktop] = make_fleet(1)
    result = drsvc_env.cli("--json", "backup", desktop)
    point_id = result.json()["results"][0]["point_id"]
    services = drsvc_env.services()
    manifest = services.hot.get_manifest(desktop, point_id)
    ref = StreamRef.from_dict(manifest["volume"]["stream"])
    victim = ref.chunks[len(ref.chunks) // 2][0]
    store = services.hot.store
    blob = bytearray(store.get(chunk_key(victim)))
    blob[len(blob) // 2] ^= 0x01
    store.put(chunk_key(victim), bytes(blob))
    with pytest.raises(IntegrityError, match=victim):
        for _ in services.hot.read_stream(ref):
            pass
