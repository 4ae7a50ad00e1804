"""The hostile-archive corpus (tests/hostile.py) against the crio:// adapter, through the kubelet protocol fake.

CRI-O extracts a checkpoint archive itself (rootfs diff, deleted files) into the restored
container's root; no CRI-O runs here, so the fake stands in for the kubelet, the API server and
the registry. What is checked is drsvc's side: the archive is refused (exit 4) before a pod is
created, no checkpoint image stays in the registry and no copy stays on the node.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.kubelet import FakeEnv, fake_env
from hostile import ATTACKS, craft

from drsvc.errors import IntegrityError, NotFound
from drsvc.runtimes import open_runtime
from drsvc.runtimes.crio import CrioRuntime

LABELS = {"drsvc.desktop": "alice", "drsvc.volume": "rados://desktops/alice", "drsvc.tenant": "acme"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[FakeEnv]:
    with fake_env(tmp_path) as e:
        e.cluster.add_pod("alice", labels=LABELS, node="node-7", container_id="a" * 64)
        yield e


@pytest.mark.parametrize("mode", ["image", "archive"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_hostile_archive_is_refused_on_crio(env: FakeEnv, tmp_path: Path, attack: str, mode: str) -> None:
    rt = open_runtime(env.crio_url(restore_mode=mode, node="node-7"), configuration=env.kubelet.configuration())
    assert isinstance(rt, CrioRuntime)
    with rt.checkpoint("alice") as stream:
        archive = stream.read()
    victim = tmp_path / "host"
    victim.mkdir()
    (victim / "victim").write_text("host data\n")
    crafted = craft(archive, **ATTACKS[attack](victim))
    with pytest.raises(IntegrityError) as e:
        rt.restore(io.BytesIO(crafted), name="alice-clone", network="none")
    assert e.value.exit_code == 4
    with pytest.raises(NotFound):
        rt.inspect("alice-clone")
    assert ("desktops", "alice-clone") not in env.cluster.pods
    assert env.registry.manifests == {} and env.registry.blobs == {}  # no memory image left behind
    assert not list(env.node_dir.glob("restore-*"))
    assert os.listdir(victim) == ["victim"] and (victim / "victim").read_text() == "host data\n"


def test_the_untouched_archive_restores_on_crio(env: FakeEnv) -> None:
    rt = open_runtime(env.crio_url(), configuration=env.kubelet.configuration())
    with rt.checkpoint("alice") as stream:
        archive = stream.read()
    assert rt.restore(io.BytesIO(craft(archive)), name="alice-clone", network="none").state == "running"
