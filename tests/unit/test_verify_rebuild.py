"""verify (manifests + chunks per tier, exit 4 naming points) and catalog rebuild / drift (moto + file://)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture, used through pytestmark)

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.chunks import PackIndex, chunk_key, index_key, pack_key
from drsvc.chunks.pack import seal_index
from drsvc.errors import EXIT_INTEGRITY
from drsvc.rebuild import catalog_drift, rebuild_catalog
from drsvc.tiering import TierJob
from drsvc.verify import VerifyJob

pytestmark = pytest.mark.usefixtures("aws")
MiB = 1024 * 1024
POINT_FIELDS = (
    "id",
    "desktop_id",
    "policy",
    "taken_at",
    "status",
    "consistency",
    "reason",
    "image",
    "bytes",
    "freeze_ms",
    "tiers",
)


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[ColdKit]:
    kit = ColdKit(tmp_path)
    kit.policy("std", ["alice", "bob"], tiering={"after": "1h", "storage_class": "STANDARD_IA"})
    now = clock.now()
    image = os.urandom(MiB)
    shared = os.urandom(MiB)
    kit.a1 = kit.point(
        "alice",
        now - timedelta(hours=6),
        shared + os.urandom(MiB),
        checkpoint=os.urandom(400_000),
        image=image,
        policy="std",
    )
    kit.b1 = kit.point("bob", now - timedelta(hours=6), shared, image=image)
    TierJob(kit.services, None).run()
    kit.a2 = kit.point("alice", now - timedelta(minutes=5), shared + os.urandom(300_000), image=image, policy="std")
    yield kit
    kit.catalog.close()


def only(kit: ColdKit, pid: str) -> set[str]:
    """Chunk ids that point alone uses (not shared with the other points)."""
    hot = kit.services.hot

    def ids(p: str, d: str) -> set[str]:
        m = hot.get_manifest(d, p)
        return {c for s in ("volume", "checkpoint") if m.get(s) for c, _ in m[s]["stream"]["chunks"]}

    others = [(p, d) for p, d in ((kit.a1, "alice"), (kit.b1, "bob"), (kit.a2, "alice")) if p != pid]
    desktop = "alice" if pid in (kit.a1, kit.a2) else "bob"
    return ids(pid, desktop) - set().union(*(ids(p, d) for p, d in others))


def test_verify_all_ok_both_tiers(kit: ColdKit, run_cli: Any) -> None:
    report = VerifyJob(kit.services).run(None, read_data=True)
    assert report.ok and report.exit_code == 0
    assert report.copies == 5  # a1, b1 hot+cold, a2 hot
    assert set(report.chunks_checked) == {"hot", "cold"}
    result = run_cli("--config", str(kit.root / "drsvc.toml"), "--json", "verify", "--all")
    assert result.code == 0, result.output
    assert result.json()["ok"] is True


def test_missing_cold_chunk_names_the_point_and_tier(kit: ColdKit, run_cli: Any) -> None:
    victim = sorted(only(kit, kit.a1))[0]
    cold = kit.services.cold
    pack = cold.pack_of(victim)
    assert pack is not None
    index = cold.refresh_packs()[pack]
    # the index of its pack no longer lists it (as if it had never been uploaded)
    shorter = PackIndex(pack, index.size, tuple(e for e in index.entries if e[0] != victim))
    cold.store.put(index_key(pack), seal_index(cold.codec, shorter))
    kit.fresh_services()  # indexes are immutable, so a running process caches them: a new process
    lists: list[Any] = []
    heads: list[Any] = []
    store = kit.services.cold.store
    store._client.meta.events.register("provide-client-params.s3.ListObjectsV2", lambda **kw: lists.append(1))  # type: ignore[attr-defined]
    store._client.meta.events.register("provide-client-params.s3.HeadObject", lambda **kw: heads.append(1))  # type: ignore[attr-defined]
    report = VerifyJob(kit.services).run(None)
    assert report.exit_code == EXIT_INTEGRITY
    assert report.affected == [kit.a1]
    [problem] = report.problems
    assert (problem.tier, problem.kind, problem.chunks) == ("cold", "chunks-missing", [victim])
    # one listing each of loose chunks, pack indexes, packs (+ the manifests'); no HEAD per chunk
    assert heads == [] and len(lists) <= 4

    result = run_cli("--config", str(kit.root / "drsvc.toml"), "--json", "verify", kit.a1)
    assert result.code == EXIT_INTEGRITY
    doc = result.json()
    assert doc["affected_points"] == [kit.a1] and doc["problems"][0]["tier"] == "cold"
    human = run_cli("--config", str(kit.root / "drsvc.toml"), "verify", "--all")
    assert human.code == EXIT_INTEGRITY and kit.a1 in human.stdout and kit.a1 in human.stderr
    assert run_cli("--config", str(kit.root / "drsvc.toml"), "verify", kit.b1).code == 0


def test_missing_pack_makes_its_chunks_missing_without_reading_data(kit: ColdKit) -> None:
    cold = kit.services.cold
    victim = sorted(only(kit, kit.a1))[0]
    pack = cold.pack_of(victim)
    assert pack is not None
    members = set(cold.refresh_packs()[pack].chunk_ids)
    cold.store.delete(pack_key(pack))
    report = VerifyJob(kit.services).run(None)
    missing = {c for p in report.problems if p.kind == "chunks-missing" for c in p.chunks}
    assert missing == members and kit.a1 in report.affected


def test_corrupt_hot_chunk_found_only_by_read_data(kit: ColdKit) -> None:
    victim = sorted(only(kit, kit.a2))[0]
    path = kit.root / "hot" / chunk_key(victim)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x20
    path.write_bytes(bytes(blob))
    assert VerifyJob(kit.services).run([kit.a2]).ok  # the listing cannot see a flipped bit
    report = VerifyJob(kit.services).run([kit.a2], read_data=True)
    assert [(p.point_id, p.tier, p.kind) for p in report.problems] == [(kit.a2, "hot", "chunks-corrupt")]


def test_tampered_manifest_and_missing_image_record(kit: ColdKit) -> None:
    key = f"manifests/bob/{kit.b1}"
    blob = bytearray(kit.services.cold.store.get(key))
    blob[-3] ^= 1
    kit.services.cold.store.put(key, bytes(blob))
    [image] = [pid for _, pid in kit.services.hot.list_manifests("_images")]
    kit.services.hot.delete_manifest("_images", image)
    report = VerifyJob(kit.services).run(None)
    kinds = sorted((p.point_id, p.tier, p.kind) for p in report.problems)
    assert (kit.b1, "cold", "manifest-corrupt") in kinds
    assert {(p, "hot", "image-missing") for p in (kit.a1, kit.b1, kit.a2)} <= set(kinds)


def test_unknown_point_is_exit_3(kit: ColdKit, run_cli: Any) -> None:
    assert run_cli("--config", str(kit.root / "drsvc.toml"), "verify", "nope").code == 3
    assert run_cli("--config", str(kit.root / "drsvc.toml"), "verify").code == 2


def test_rebuild_restores_identical_points_after_the_catalog_is_lost(kit: ColdKit, run_cli: Any) -> None:
    lock_row = "UPDATE point_tiers SET retain_until = NULL"
    kit.catalog.execute(lock_row)
    before = {p["id"]: {f: p[f] for f in POINT_FIELDS} for p in kit.catalog.points()}
    snaps_before = {
        p["id"]: kit.catalog.query("SELECT pool, name FROM pool_snapshots WHERE id = ?", [p["pool_snapshot_id"]])[0]
        for p in kit.catalog.points()
    }
    tiers_before = kit.catalog.query("SELECT point_id, tier, store_url FROM point_tiers ORDER BY point_id, tier")
    desktops_before = {d["id"]: (d["container"], d["volume"], d["tenant"], d["labels"]) for d in kit.catalog.desktops()}
    db = Path(kit.catalog.path)
    kit.catalog.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    services = kit.fresh_services()
    assert services.catalog.points() == []

    result = run_cli("--config", str(kit.root / "drsvc.toml"), "--json", "catalog", "rebuild")
    assert result.code == 0, result.output
    doc = result.json()
    assert sorted(doc["points_added"]) == sorted(before) and doc["problems"] == []
    catalog = Catalog.open(db)
    after = {p["id"]: {f: p[f] for f in POINT_FIELDS} for p in catalog.points()}
    assert after == before
    assert {
        p["id"]: catalog.query("SELECT pool, name FROM pool_snapshots WHERE id = ?", [p["pool_snapshot_id"]])[0]
        for p in catalog.points()
    } == snaps_before
    assert catalog.query("SELECT point_id, tier, store_url FROM point_tiers ORDER BY point_id, tier") == tiers_before
    assert {
        d["id"]: (d["container"], d["volume"], d["tenant"], d["labels"]) for d in catalog.desktops()
    } == desktops_before
    assert {a["kind"] for a in catalog.artifacts(kit.a1)} == {"volume", "checkpoint"}
    held = {a["kind"]: a["held_files"] for a in catalog.artifacts(kit.a1)}
    recorded = kit.services.hot.get_manifest("alice", kit.a1)["checkpoint"]["held_files"]  # what backup wrote
    assert recorded and json.loads(held["checkpoint"]) == recorded and held["volume"] is None
    shown = run_cli("--config", str(kit.root / "drsvc.toml"), "--json", "points", "show", kit.a1)
    assert shown.json()["held_files"] == recorded
    catalog.close()
    again = run_cli("--config", str(kit.root / "drsvc.toml"), "--json", "catalog", "rebuild")
    assert again.json()["points_added"] == [] and again.json()["points_present"] == 3
    assert run_cli("--config", str(kit.root / "drsvc.toml"), "catalog", "check").code == 0


def test_rebuild_reads_object_lock_retention_of_cold_copies(tmp_path: Path) -> None:
    from drsvc.storage.s3 import S3Store

    kit = ColdKit(tmp_path)
    S3Store(kit.bucket, "fleet", object_lock=True)
    kit.policy("locked", ["carol"], tiering={"after": "1h", "object_lock_days": 2})
    pid = kit.point("carol", clock.now() - timedelta(hours=3), os.urandom(MiB))
    TierJob(kit.services, None).run()
    until = kit.catalog.query("SELECT retain_until FROM point_tiers WHERE tier = 'cold'")[0]["retain_until"]
    kit.catalog.execute("DELETE FROM point_tiers")
    kit.catalog.execute("DELETE FROM artifacts")
    kit.catalog.execute("DELETE FROM tier_moves")
    kit.catalog.execute("DELETE FROM points")
    rebuild_catalog(kit.services)
    [row] = kit.catalog.query("SELECT retain_until FROM point_tiers WHERE point_id = ? AND tier = 'cold'", [pid])
    assert abs((clock.from_iso(row["retain_until"]) - clock.from_iso(until)).total_seconds()) < 1
    kit.catalog.close()


def test_catalog_check_reports_drift_both_ways(kit: ColdKit, run_cli: Any) -> None:
    config = str(kit.root / "drsvc.toml")
    assert run_cli("--config", config, "catalog", "check").code == 0
    kit.services.cold.delete_manifest("bob", kit.b1)  # catalog row without storage
    kit.catalog.execute("DELETE FROM point_tiers WHERE point_id = ? AND tier = 'hot'", [kit.a2])  # the reverse
    drift = catalog_drift(kit.services)
    assert len(drift) == 2
    assert any(kit.b1 in d and d.startswith("catalog:") and "cold" in d for d in drift)
    assert any(kit.a2 in d and d.startswith("storage:") for d in drift)
    result = run_cli("--config", config, "--json", "catalog", "check")
    assert result.code == EXIT_INTEGRITY
    details = result.json()["details"]
    assert len([d for d in details if d.startswith(("catalog:", "storage:"))]) == 2
    # a2's pool snapshot now serves no hot copy: reported as a leftover for `drsvc cleanup`
    assert any(d.startswith("leftover: pool snapshot") for d in details)
    assert run_cli("--config", config, "catalog", "check", "--no-stores").code == 0
    boto3.client("s3")  # moto still active: the store stays reachable for the rebuild below
    rebuild_catalog(kit.services)  # repairs the storage side of the drift
    assert [d for d in catalog_drift(kit.services) if d.startswith("storage:")] == []

    # --forget-missing repairs the catalog side: b1's cold record goes, b1 and its hot copy stay
    tiers_of_b1 = "SELECT tier FROM point_tiers WHERE point_id = ? ORDER BY tier"
    assert [r["tier"] for r in kit.catalog.query(tiers_of_b1, [kit.b1])] == ["cold", "hot"]
    dry = run_cli("--config", config, "--json", "catalog", "rebuild", "--dry-run", "--forget-missing")
    assert dry.code == 0 and dry.json()["tiers_forgotten"] == [f"{kit.b1}:cold"]
    assert [r["tier"] for r in kit.fresh_services().catalog.query(tiers_of_b1, [kit.b1])] == ["cold", "hot"]
    done = run_cli("--config", config, "catalog", "rebuild", "--forget-missing")
    assert done.code == 0 and kit.b1 in done.stdout and "forgot 1 copy" in done.stdout
    catalog = kit.fresh_services().catalog
    assert [r["tier"] for r in catalog.query(tiers_of_b1, [kit.b1])] == ["hot"]
    assert catalog_drift(kit.services) == []
    assert run_cli("--config", config, "catalog", "check").code == 0
    # a copy recorded in another store than the configured one is reported, never forgotten
    catalog.execute(
        "UPDATE point_tiers SET store_url = 's3://elsewhere/x' WHERE point_id = ? AND tier = 'cold'", [kit.a1]
    )
    assert rebuild_catalog(kit.services, forget_missing=True).tiers_forgotten == []
    assert any(kit.a1 in d and "s3://elsewhere/x" in d for d in catalog_drift(kit.services))
