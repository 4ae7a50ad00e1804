"""``drsvc backup`` and ``drsvc restore`` on Docker desktops in the lab: the done-when test for docker://.

The drsvc deployment is the ``drsvc_env`` one (own hot-store prefix, catalog, key) with its runtime
switched to ``docker://<lab>/docker.sock``. The desktop is a busybox container in Docker whose
in-memory counter must continue after the restore, and whose RADOS namespace must come back
exactly as it was at the paired pool snapshot.
"""

from __future__ import annotations

import time
from typing import Any

from counting import counted_past
from runtime_suite import read_counter, wait_counter_above
from test_runtime_docker import docker_socket, make_docker_fleet  # noqa: F401  (fixtures)

from drsvc.catalog import Catalog


def _use_docker(drsvc_env: Any, sock: str) -> None:
    text = drsvc_env.config.read_text()
    lines = [
        f'url = "docker://{sock}"' if line.startswith("url = ") and "podman://" in line else line
        for line in text.splitlines()
    ]
    drsvc_env.config.write_text("\n".join(lines) + "\n")
    assert f"docker://{sock}" in drsvc_env.config.read_text()


def test_backup_destroy_restore_continues_the_process(
    drsvc_env: Any,
    docker_socket: str,  # noqa: F811
    make_docker_fleet: Any,  # noqa: F811
    rados_cluster: Any,
    fleetdata: Any,
) -> None:
    _use_docker(drsvc_env, docker_socket)
    [desktop] = make_docker_fleet(1, data_mib=2)
    services = drsvc_env.services()
    runtime = services.runtime
    assert runtime.url == f"docker://{docker_socket}"
    wait_counter_above(runtime, desktop, 0)  # it has started counting
    at_backup, boot = read_counter(runtime, desktop)

    t = time.monotonic()
    backup = drsvc_env.cli("--json", "backup", desktop)
    backup_seconds = time.monotonic() - t
    assert backup.code == 0, backup.output
    [result] = backup.json()["results"]
    assert result["status"] == "complete"
    # dockerd's runc hands CRIU /etc/criu/runc.conf: the freeze hook pairs memory with the snapshot
    assert result["consistency"] == "paired", result
    assert result["freeze_ms"] and result["freeze_ms"] > 0
    point_id = result["point_id"]
    manifest = services.hot.get_manifest(desktop, point_id)
    assert manifest["runtime"]["url"] == f"docker://{docker_socket}"
    assert manifest["checkpoint"] and manifest["image"]
    url = manifest["volume"]["url"]
    expected = {o["name"]: o["digest"] for o in manifest["volume"]["objects"]}
    assert expected

    # the incident: the container is gone and its data damaged
    at_loss = counted_past(runtime, desktop, 25)  # 5 s on: the restore has that long to be read
    runtime.remove(desktop)
    io = rados_cluster.open_ioctx("desktops")
    io.set_namespace(desktop)
    names = sorted(expected)
    io.remove_object(names[0])
    io.write_full(names[1], b"ransomware was here")
    io.write_full("dropped-by-the-attacker", b"x" * 1000)
    assert services.volume(url).digests_now() != expected

    t = time.monotonic()
    restore = drsvc_env.cli("--json", "restore", desktop)
    restore_seconds = time.monotonic() - t
    assert restore.code == 0, restore.output
    doc = restore.json()
    assert doc["status"] == "ok" and doc["tier"] == "hot" and doc["point_id"] == point_id
    print(
        f"\ndocker: backup {backup_seconds:.2f} s (checkpoint {result['checkpoint_ms']:.0f} ms, "
        f"freeze {result['freeze_ms']:.0f} ms), restore {restore_seconds:.2f} s, "
        f"RTO {doc['rto_seconds']:.2f} s, phases { {k: round(v, 2) for k, v in doc['phases'].items()} }"
    )
    # the volume is exactly the snapshot's content
    assert services.volume(url).digests_now() == expected
    assert fleetdata.verify_namespace(io, 42, desktop, 2) == []
    # the process continued from the checkpoint: same boot id, counting on from the backup instant
    restored = runtime.inspect(desktop)
    assert restored.state == "running" and restored.restored_at
    assert (restored.volume, restored.tenant) == (f"rados://desktops/{desktop}", manifest["runtime"]["tenant"])
    after, after_boot = read_counter(runtime, desktop)
    assert after_boot == boot
    assert at_backup <= after < at_loss
    wait_counter_above(runtime, desktop, after)  # and it counts on
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    [row] = catalog.query("SELECT status, consistency FROM points WHERE id = ?", [point_id])
    assert (row["status"], row["consistency"]) == ("complete", "paired")


def test_drill_restores_a_sandboxed_clone_and_removes_it(
    drsvc_env: Any,
    docker_socket: str,  # noqa: F811
    make_docker_fleet: Any,  # noqa: F811
) -> None:
    """A drill on Docker: clone without network beside the running desktop, verified, then gone."""
    _use_docker(drsvc_env, docker_socket)
    [desktop] = make_docker_fleet(1, data_mib=0.5)
    assert drsvc_env.cli("backup", desktop).code == 0
    result = drsvc_env.cli("--json", "drill", desktop)
    assert result.code == 0, result.stdout + result.stderr
    doc = result.json()
    assert doc["summary"]["count"] == doc["summary"]["passed"] == 1
    [r] = doc["results"]
    assert r["verified"] and r["passed"] and r["rto_seconds"] > 0
    runtime = drsvc_env.services().runtime
    assert runtime.inspect(desktop).state == "running"  # the original never stopped
    assert not [d.container for d in runtime.list_desktops() if d.container.startswith("drill-")]
