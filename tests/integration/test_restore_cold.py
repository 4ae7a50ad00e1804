"""Restore from a point that only the cold tier (S3 on radosgw) still holds."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from verdicts import assert_rto_verdict

from drsvc.catalog import Catalog


@pytest.fixture
def cold_bucket(lab: Any) -> Iterator[str]:
    name = f"drsvc-it-{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(
        ["radosgw-admin", "-c", lab.ceph_conf, "bucket", "rm", "--bucket", name, "--purge-objects", "--bypass-gc"],
        capture_output=True,
        timeout=120,
    )


@pytest.mark.parametrize("recompress", [True, False], ids=["frames", "verbatim"])
def test_restore_from_a_cold_only_point(drsvc_env, make_fleet, cold_bucket, rados_cluster, fleetdata, recompress):
    drsvc_env.write(
        f'[cold]\nstore = "s3://{cold_bucket}/fleet"\nendpoint_url = "{os.environ["S3_ENDPOINT_URL"]}"\n'
        f"recompress = {'true' if recompress else 'false'}\n"  # false: the hot chunks packed as they are
    )
    [desktop] = make_fleet(1, data_mib=4)
    drsvc_env.policy(
        "coldish",
        [desktop],
        retention={"hot": {"last": 1}, "cold": {"last": 10}},
        tiering={"after": "1s", "storage_class": "STANDARD_IA"},
    )
    first = drsvc_env.cli("--json", "backup", "--policy", "coldish")
    assert first.code == 0, first.output
    point_id = first.json()["results"][0]["point_id"]
    services = drsvc_env.services()
    runtime = services.runtime
    _, boot = runtime.exec(desktop, ["cat", "/data/counter"])[1].split()
    drsvc_env.wait_due_for_tier(point_id)
    tiered = drsvc_env.cli("--json", "tier")
    assert tiered.code == 0, tiered.output
    assert drsvc_env.cli("backup", "--policy", "coldish").code == 0
    assert drsvc_env.cli("prune").code == 0  # hot keeps only the newest: the first point is cold-only now
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    assert catalog.point(point_id)["tiers"] == ["cold"]
    framed = [e for index in services.cold.refresh_packs().values() for e in index.entries if e.in_frame]
    assert bool(framed) == recompress  # the checkpoint's chunks compress: frames, or zstd chunks verbatim
    expected = {o["name"]: o["digest"] for o in services.cold.get_manifest(desktop, point_id)["volume"]["objects"]}

    runtime.remove(desktop)
    volume = services.volume(f"rados://desktops/{desktop}")
    volume.purge()  # the whole namespace lost, not just damaged

    result = drsvc_env.cli("--json", "restore", desktop, "--point", point_id, "--verify")
    doc = result.json()
    assert_rto_verdict(result.code, doc)
    assert doc["tier"] == "cold" and doc["point_id"] == point_id
    assert volume.digests_now() == expected
    # and against the generator that wrote the desktop's data, not drsvc's own digests
    io = rados_cluster.open_ioctx("desktops")
    try:
        assert fleetdata.verify_namespace(io, 42, desktop, 4, strict=True) == []
    finally:
        io.close()
    _, after_boot = runtime.exec(desktop, ["cat", "/data/counter"])[1].split()
    assert after_boot == boot  # the process continued from the cold checkpoint
