"""Restores and drills on the real lab: the incident path, end to end."""

from __future__ import annotations

from counting import counted_past
from runtime_suite import read_counter, start_growing, wait_counter_above
from verdicts import assert_rto_verdict

from drsvc.catalog import Catalog
from drsvc.chunks import StreamRef, chunk_key


def _digests(services, url: str) -> dict[str, str]:
    return services.volume(url).digests_now()


def test_restore_after_the_desktop_is_destroyed_and_its_data_damaged(drsvc_env, make_fleet, rados_cluster, fleetdata):
    [desktop] = make_fleet(1, data_mib=4)
    services = drsvc_env.services()
    runtime = services.runtime
    at_backup, boot = read_counter(runtime, desktop)
    backup = drsvc_env.cli("--json", "backup", desktop)
    assert backup.code == 0, backup.output
    point_id = backup.json()["results"][0]["point_id"]
    manifest = services.hot.get_manifest(desktop, point_id)
    url = manifest["volume"]["url"]
    expected = {o["name"]: o["digest"] for o in manifest["volume"]["objects"]}

    # a running desktop is not overwritten without --force
    refused = drsvc_env.cli("restore", desktop)
    assert refused.code == 2 and "--force" in refused.stderr

    # the incident: the desktop is gone, its data damaged (deleted, overwritten, added)
    at_loss = counted_past(runtime, desktop, 25)  # 5 s on: the restore has that long to be read
    runtime.remove(desktop)
    io = rados_cluster.open_ioctx("desktops")
    io.set_namespace(desktop)
    names = sorted(expected)
    io.remove_object(names[0])
    io.write_full(names[1], b"ransomware was here")
    io.set_xattr(names[2], "user.evil", b"1")
    io.write_full("dropped-by-the-attacker", b"x" * 1000)
    assert _digests(services, url) != expected

    dry = drsvc_env.cli("--json", "restore", desktop, "--dry-run")
    assert dry.code == 0 and dry.json()["tier"] == "hot" and dry.json()["point_id"] == point_id
    assert dry.json()["predicted_rto_seconds"] > 0
    assert _digests(services, url) != expected  # a dry run touches nothing

    result = drsvc_env.cli("--json", "restore", desktop)
    doc = result.json()
    assert_rto_verdict(result.code, doc)
    assert doc["tier"] == "hot" and doc["point_id"] == point_id and doc["target_seconds"] == 30
    assert set(doc["phases"]) == {"plan", "fetch", "volume", "container", "health"}
    # exactly the snapshot's content, byte for byte against the seed
    assert _digests(services, url) == expected
    assert fleetdata.verify_namespace(io, 42, desktop, 4) == []
    # the process continued from the checkpoint: same boot, counting on from the backup instant
    after, after_boot = read_counter(runtime, desktop)
    assert after_boot == boot
    assert at_backup <= after < at_loss
    wait_counter_above(runtime, desktop, after)  # and it counts on
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    [row] = catalog.query("SELECT status, tier, rto_seconds, phases FROM restores WHERE point_id = ?", [point_id])
    assert row["status"] == doc["status"] and row["tier"] == "hot"
    assert abs(row["rto_seconds"] - doc["rto_seconds"]) < 0.01


def test_restore_as_a_clone_runs_beside_the_original(drsvc_env, make_fleet):
    [desktop] = make_fleet(1)
    services = drsvc_env.services()
    runtime = services.runtime
    # read before the backup: the checkpoint's count is at least this. (A count read after the
    # backup can be past what the clone reaches by the time it is read: the backup's upload after
    # the checkpoint may take longer than the restore's steps after the clone resumed.)
    before_backup, boot = read_counter(runtime, desktop)
    assert drsvc_env.cli("backup", desktop).code == 0
    original_before = read_counter(runtime, desktop)[0]
    clone = f"{desktop}-clone"
    result = drsvc_env.cli("--json", "restore", desktop, "--as", clone)
    assert result.code == 0, result.output
    try:
        assert runtime.inspect(desktop).state == runtime.inspect(clone).state == "running"
        discovered = [d["desktop_id"] for d in drsvc_env.cli("--json", "desktops", "discover").json()["desktops"]]
        assert desktop in discovered and clone not in discovered  # a clone is not a desktop to protect
        clone_ref = runtime.inspect(clone)
        assert clone_ref.desktop_id == clone and clone_ref.labels["drsvc.clone-of"] == desktop
        assert clone_ref.volume == f"rados://desktops/{clone}"
        clone_value, clone_boot = read_counter(runtime, clone)
        assert clone_boot == boot  # the clone continues the checkpointed process
        assert clone_value >= before_backup  # counts on from the checkpoint, not from zero
        wait_counter_above(runtime, desktop, original_before)  # the original never stopped
        manifest = services.hot.get_manifest(desktop, result.json()["point_id"])
        assert _digests(services, clone_ref.volume) == {o["name"]: o["digest"] for o in manifest["volume"]["objects"]}
    finally:
        runtime.remove(clone)
        services.volume(f"rados://desktops/{clone}").purge()


def test_a_desktop_resizing_a_root_filesystem_file_all_the_time_is_restored(drsvc_env, make_fleet):
    """A journal written without pause in the container's own filesystem: the point restores.

    CRIU refuses a file whose size differs from the dump's, and the runtime reads the root
    filesystem after the dump; drsvc copies such files inside the freeze (heldfiles).
    """
    [desktop] = make_fleet(1)
    services = drsvc_env.services()
    runtime = services.runtime
    start_growing(runtime, desktop, "/root/journal")
    backup = drsvc_env.cli("--json", "backup", desktop)
    assert backup.code == 0, backup.output
    [result] = backup.json()["results"]
    assert result["consistency"] == "paired", result
    [journal] = [f for f in result["held"]["files"] if f["path"] == "root/journal"]
    manifest = services.hot.get_manifest(desktop, result["point_id"])
    assert manifest["checkpoint"]["held_files"] == result["held"]
    shown = drsvc_env.cli("--json", "points", "show", result["point_id"])
    assert shown.code == 0 and shown.json()["held_files"] == result["held"], shown.output
    clone = f"{desktop}-journal"
    restored = drsvc_env.cli("--json", "restore", desktop, "--as", clone)
    try:
        assert restored.code == 0, restored.output
        assert restored.json()["point_id"] == result["point_id"]
        code, out = runtime.exec(clone, ["sh", "-c", "wc -c </root/journal"])
        assert code == 0 and int(out) >= journal["size"] > 0  # the clone's writer goes on from the dump
    finally:
        runtime.remove(clone)
        services.volume(f"rados://desktops/{clone}").purge()


def test_unknown_desktop_is_exit_3(drsvc_env):
    result = drsvc_env.cli("restore", "nobody-here")
    assert result.code == 3 and "unknown desktop" in result.stderr


def test_drill_of_three_in_parallel_passes_and_leaves_no_clone(drsvc_env, make_fleet):
    desktops = make_fleet(3)
    for d in desktops:
        assert drsvc_env.cli("backup", d).code == 0
    result = drsvc_env.cli("--json", "drill", *desktops, "--parallel", "3")
    assert result.code == 0, result.stdout + result.stderr
    doc = result.json()
    assert doc["summary"]["count"] == doc["summary"]["passed"] == 3
    assert all(r["verified"] and r["passed"] and r["rto_seconds"] > 0 for r in doc["results"])
    assert doc["summary"]["rto_max"] >= doc["summary"]["rto_p95"] >= doc["summary"]["rto_p50"] > 0
    services = drsvc_env.services()
    names = [d.container for d in services.runtime.list_desktops()]
    assert not [n for n in names if n.startswith("drill-")]
    for d in desktops:
        assert services.volume(f"rados://desktops/drill-{doc['drill_id']}-{d}").objects_now() == []
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    rows = catalog.query("SELECT passed, verified FROM drill_results WHERE drill_id = ?", [doc["drill_id"]])
    assert len(rows) == 3 and all(r["passed"] and r["verified"] for r in rows)


def test_drill_with_a_corrupted_chunk_fails_that_desktop_with_the_reason(drsvc_env, make_fleet):
    good, bad = make_fleet(2)
    for d in (good, bad):
        assert drsvc_env.cli("backup", d).code == 0
    services = drsvc_env.services()
    [point] = Catalog.open(drsvc_env.root / "catalog.db").points(bad, status="complete")
    manifest = services.hot.get_manifest(bad, point["id"])
    victim = StreamRef.from_dict(manifest["checkpoint"]["stream"]).chunks[0][0]
    blob = bytearray(services.hot.store.get(chunk_key(victim)))
    blob[-5] ^= 0xFF
    services.hot.store.put(chunk_key(victim), bytes(blob))

    result = drsvc_env.cli("--json", "drill", good, bad, "--parallel", "2")
    assert result.code == 6, result.stdout + result.stderr  # partial
    by_desktop = {r["desktop"]: r for r in result.json()["results"]}
    assert by_desktop[good]["passed"]
    assert not by_desktop[bad]["passed"] and victim in by_desktop[bad]["error"]
    assert not [d for d in services.runtime.list_desktops() if d.container.startswith("drill-")]
