"""A hot store made with 32 KiB chunks (``[hot] chunk_kib = 32``), end to end on the lab: backup into
RADOS, tier to S3 on radosgw (the cold store takes the hot store's parameters), and restores from
both tiers, byte for byte against the generator that wrote the desktop's data."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from drsvc.chunks import ChunkerParams, StreamRef

KiB = 1024
DATA_MIB = 4


@pytest.fixture
def cold_bucket(lab: Any) -> Iterator[str]:
    name = f"chunks-it-{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(
        ["radosgw-admin", "-c", lab.ceph_conf, "bucket", "rm", "--bucket", name, "--purge-objects", "--bypass-gc"],
        capture_output=True,
        timeout=120,
    )


def _same_data(rados_cluster: Any, fleetdata: Any, desktop: str, clone: str) -> list[str]:
    """Problems of ``clone``'s namespace against what the generator wrote for ``desktop``."""
    io = rados_cluster.open_ioctx("desktops")
    try:
        io.set_namespace(clone)
        problems = []
        for name, (data, xattrs, omap) in fleetdata.expected_objects(42, desktop, DATA_MIB).items():
            got = fleetdata.read_object(io, name)
            if (got[0], got[1], got[2]) != (data, xattrs, omap):
                problems.append(f"{clone}/{name}: differs ({len(got[0])} bytes, expected {len(data)})")
        return problems
    finally:
        io.close()


def test_32_kib_chunks_backup_tier_and_restore_hot_and_cold_byte_exact(
    drsvc_env: Any, make_fleet: Any, cold_bucket: str, rados_cluster: Any, fleetdata: Any
) -> None:
    drsvc_env.write(f'[cold]\nstore = "s3://{cold_bucket}/fleet"\nendpoint_url = "{os.environ["S3_ENDPOINT_URL"]}"\n')
    drsvc_env.config.write_text(drsvc_env.config.read_text().replace("[hot]\n", "[hot]\nchunk_kib = 32\n", 1))
    [desktop] = make_fleet(1, data_mib=DATA_MIB)
    drsvc_env.policy(
        "small",
        [desktop],
        retention={"hot": {"last": 10}, "cold": {"last": 10}},
        tiering={"after": "1s", "storage_class": "STANDARD"},
    )
    backup = drsvc_env.cli("--json", "backup", "--policy", "small")
    assert backup.code == 0, backup.output
    point_id = backup.json()["results"][0]["point_id"]
    services = drsvc_env.services()
    want = ChunkerParams(8 * KiB, 32 * KiB, 128 * KiB)
    assert services.hot.params == want  # recorded in the new store's config
    ref = StreamRef.from_dict(services.hot.get_manifest(desktop, point_id)["volume"]["stream"])
    sizes = [size for _, size in ref.chunks]
    assert max(sizes) <= 128 * KiB and sum(sizes) / len(sizes) < 64 * KiB, (len(sizes), sum(sizes))
    drsvc_env.wait_due_for_tier(point_id)
    tiered = drsvc_env.cli("--json", "tier")
    assert tiered.code == 0, tiered.output
    assert drsvc_env.services().cold.params == want  # created from the hot store's parameters

    runtime = services.runtime
    clones = {tier: f"{desktop}-{tier}" for tier in ("hot", "cold")}
    try:
        for tier, clone in clones.items():
            done = drsvc_env.cli("--json", "restore", desktop, "--point", point_id, "--tier", tier, "--as", clone)
            assert done.code in (0, 5), done.output  # 5: an RTO target missed on a busy lab, restored all the same
            assert done.json()["tier"] == tier
            assert _same_data(rados_cluster, fleetdata, desktop, clone) == []
            runtime.inspect(clone)  # the clone container exists (its checkpoint restored)
    finally:
        for clone in clones.values():
            subprocess.run(["podman", "rm", "-f", "-t", "0", clone], capture_output=True, timeout=120)
            services.volume(f"rados://desktops/{clone}").purge()
