"""A ``drsvc backup`` of a Docker desktop killed (-9) mid-checkpoint leaves no memory image behind.

dockerd keeps the checkpoint (every memory page of the desktop) in
``<DockerRootDir>/containers/<id>/checkpoints/drsvc-<12 hex>``; the adapter deletes it once the
archive has streamed, which a kill skips. The backup recorded a ``checkpoint-dir`` intent first:
``drsvc cleanup`` removes exactly that directory (unit tests: tests/unit/test_docker_checkpoint_intents.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from test_docker_backup_restore import _use_docker
from test_runtime_docker import docker_socket, make_docker_fleet  # noqa: F401  (fixtures)

from drsvc.catalog import Catalog
from drsvc.intents import leftovers
from drsvc.runtimes.docker.paths import BACKUP_CHECKPOINT


def _drsvc_checkpoints(checkpoints: Path) -> list[Path]:
    try:
        return sorted(p for p in checkpoints.iterdir() if BACKUP_CHECKPOINT.fullmatch(p.name))
    except FileNotFoundError:
        return []


def test_a_docker_backup_killed_mid_checkpoint_leaves_its_directory_to_cleanup(
    drsvc_env: Any,
    docker_socket: str,  # noqa: F811
    make_docker_fleet: Any,  # noqa: F811
) -> None:
    _use_docker(drsvc_env, docker_socket)
    [desktop] = make_docker_fleet(1, data_mib=0.5)
    runtime = drsvc_env.services().runtime
    cid = runtime.inspect(desktop).container_id
    checkpoints = runtime.client.root_dir() / "containers" / cid / "checkpoints"
    assert _drsvc_checkpoints(checkpoints) == []

    # killed while its desktop stands frozen: CRIU has dumped the memory into the directory
    proc = drsvc_env.subprocess("backup", desktop, env={**os.environ, "DRSVC_FAULT": "after-snapshot:kill"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -9, f"the backup never reached after-snapshot (exit {proc.returncode}):\n{out}\n{err}"
    # the freeze hook lets the desktop go at its own timeout (budget + 1 s); dockerd then finishes
    time.sleep(10)
    [left] = _drsvc_checkpoints(checkpoints)  # the leak a kill used to leave forever
    assert any(left.iterdir()), "the checkpoint directory holds CRIU's images"
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    [intent] = [i for i in leftovers(catalog) if i.kind == "checkpoint-dir"]
    assert intent.target == left.name and intent.detail["container"] == desktop

    result = drsvc_env.cli("--json", "cleanup")
    assert result.code == 0, result.output
    assert not left.exists() and _drsvc_checkpoints(checkpoints) == []
    assert [i for i in leftovers(catalog) if i.kind == "checkpoint-dir"] == []
    assert runtime.inspect(desktop).state == "running"  # the desktop itself was never touched
    # and the next backup of it works (its own checkpoint comes and goes)
    again = drsvc_env.cli("backup", desktop)
    assert again.code == 0, again.output
    assert _drsvc_checkpoints(checkpoints) == []
