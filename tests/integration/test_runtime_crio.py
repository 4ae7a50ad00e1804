"""crio:// end to end with real CRIU archives: the protocol fake kubelet (tests/fakes/kubelet.py) is backed
by Podman on the lab, which writes and reads the same checkpoint archive format as CRI-O.

What is real: the kubernetes client, HTTPS with certificate checks, the adapter's checkpoint, archive
streaming and deletion, the checkpoint OCI image push (to a fake registry) and pod recreation, and
every CRIU checkpoint/restore (Podman). What is fake: the API server and kubelet (protocol fake); the
"node" runs a pod's container by restoring the pulled checkpoint layer with Podman. ``exec`` (the
suite's way of reading a desktop's counter) is not implemented for crio:// (pods/exec is a websocket
stream), so the suite here reads counters through Podman: an observation hook, not the adapter.
"""

from __future__ import annotations

import hashlib
import socket
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fakes.kubelet import FakeEnv, fake_env
from runtime_suite import MakeDesktop, RuntimeSuite, read_counter, wait_counter_above

from drsvc.runtimes import open_runtime
from drsvc.runtimes.crio import POD_MEMBER, CrioRuntime
from drsvc.runtimes.podman import PodmanRuntime


class PodmanNode:
    """The fake's node backend: pods are Podman containers named like the pod."""

    def __init__(self, podman: PodmanRuntime) -> None:
        self.podman = podman
        self.archives: list[tuple[str, str, int]] = []  # (file name, sha256, size) the kubelet wrote

    def checkpoint(self, pod: dict[str, Any], container: str, dest: Path) -> None:
        digest = hashlib.sha256()
        with self.podman.checkpoint(pod["metadata"]["name"]) as stream, dest.open("wb") as out:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        self.archives.append((dest.name, digest.hexdigest(), dest.stat().st_size))

    def start(self, pod: dict[str, Any], container: str, archive: Path | None) -> str:
        if archive is None:
            raise RuntimeError("this node only runs pods restored from checkpoints")
        with archive.open("rb") as f:
            ref = self.podman.restore(f, name=pod["metadata"]["name"], labels=pod["metadata"].get("labels") or {})
        archive.unlink()
        return ref.container_id

    def stop(self, pod: dict[str, Any]) -> None:
        self.podman.remove(pod["metadata"]["name"])


class ObservedCrio(CrioRuntime):
    """The adapter under test, plus ``exec`` through Podman so the suite can read counters (see module doc)."""

    podman: PodmanRuntime

    def exec(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str]:
        _, pod, _ = self._resolve(name)
        return self.podman.exec(pod, argv, timeout)


@pytest.fixture(scope="module")
def podman(lab: Any) -> Iterator[PodmanRuntime]:
    rt = open_runtime(f"podman://{lab.podman_socket}")
    assert isinstance(rt, PodmanRuntime)
    yield rt
    rt.close()


@pytest.fixture
def fake(podman: PodmanRuntime, tmp_path: Path) -> Iterator[FakeEnv]:
    with fake_env(tmp_path, node=PodmanNode(podman)) as env:
        yield env


@pytest.fixture
def crio(fake: FakeEnv, podman: PodmanRuntime) -> Iterator[ObservedCrio]:
    from drsvc.runtimes.crio import from_url

    base = from_url(fake.crio_url(timeout="60"), configuration=fake.kubelet.configuration())
    base.__class__ = ObservedCrio
    rt = base
    assert isinstance(rt, ObservedCrio)
    rt.podman = podman
    yield rt
    rt.close()


def make_pods(fake: FakeEnv, podman: PodmanRuntime, make_fleet: Callable[..., list[str]], n: int) -> list[str]:
    names = []
    for ident in make_fleet(n, data_mib=0.1):
        ref = podman.inspect(ident)
        fake.cluster.add_pod(
            ident,
            labels=ref.labels,
            container="desktop",
            image=ref.image,
            image_id=ref.image_id,
            container_id=ref.container_id,
            node=socket.gethostname(),
        )
        names.append(f"desktops/{ident}/desktop")
    return names


class TestCrioRuntime(RuntimeSuite):
    @pytest.fixture
    def runtime(self, crio: ObservedCrio) -> ObservedCrio:
        return crio

    @pytest.fixture
    def make_desktop(
        self, fake: FakeEnv, podman: PodmanRuntime, make_fleet: Callable[..., list[str]]
    ) -> Callable[[int], list[str]]:
        return lambda n: make_pods(fake, podman, make_fleet, n)

    # ---- adapted: names are NAMESPACE/POD/CONTAINER, so a desktop id is not its container name
    def test_discover_parses_labels(self, runtime: ObservedCrio, make_desktop: MakeDesktop) -> None:
        (name,) = make_desktop(1)
        found = {d.container: d for d in runtime.list_desktops()}
        d = found[name]
        pod = name.split("/")[1]
        assert d.desktop_id == d.labels["drsvc.desktop"] == pod
        assert d.volume == d.labels["drsvc.volume"] and d.volume
        assert d.tenant == d.labels["drsvc.tenant"] and d.tenant
        assert len(d.container_id) == 64 and d.state == "running" and d.image_id and d.node
        i = runtime.inspect(name)
        assert (i.container_id, i.desktop_id, i.volume, i.tenant, i.image_id) == (
            d.container_id,
            d.desktop_id,
            d.volume,
            d.tenant,
            d.image_id,
        )
        assert i.state == "running" and i.network and i.image
        assert runtime.inspect(d.container_id).container == name

    # ---- adapted: a clone is its own pod ("POD-clone"), not another container of the original pod
    def clone_name(self, name: str, suffix: str) -> str:
        return f"{name.split('/')[1]}-{suffix}"

    def test_restore_clone_beside_original(self, runtime: ObservedCrio, make_desktop: MakeDesktop) -> None:
        (name,) = make_desktop(1)
        before = wait_counter_above(runtime, name, 0)
        clone = f"{name.split('/')[1]}-clone"
        with runtime.checkpoint(name) as stream:
            ref = runtime.restore(stream, name=clone)
        try:
            assert ref.container == f"desktops/{clone}/desktop" and ref.state == "running"
            assert runtime.inspect(name).state == "running"
            assert ref.container_id != runtime.inspect(name).container_id
            count, boot = wait_counter_above(runtime, ref.container, before[0])
            assert boot == before[1] and count > before[0]
            assert wait_counter_above(runtime, name, count)[1] == before[1]
        finally:
            runtime.remove(clone)

    # ---- not applicable to CRI-O under Kubernetes
    def test_restore_clone_without_network(self) -> None:
        pytest.skip("crio: network='none' is a label a deny-all NetworkPolicy selects; the fake has no network")

    def test_exec(self) -> None:
        pytest.skip("crio: exec needs the pods/exec websocket stream, not implemented (suite reads via Podman)")

    def test_pause_unpause(self) -> None:
        pytest.skip("crio: Kubernetes has no pause (pause raises Unsupported; the freeze hook pairs instead)")

    def test_image_round_trip(self) -> None:
        pytest.skip("crio: base images stay in their registry (save_image/load_image raise Unsupported)")


def test_archive_streams_out_intact_is_deleted_and_podman_restores_it(
    crio: ObservedCrio, fake: FakeEnv, podman: PodmanRuntime, make_fleet: Callable[..., list[str]], tmp_path: Path
) -> None:
    """Real CRIU archive out through the kubelet fake: bytes intact, node copy gone, Podman continues it."""
    (name,) = make_pods(fake, podman, make_fleet, 1)
    pod = name.split("/")[1]
    before = wait_counter_above(crio, name, 0)
    node: PodmanNode = fake.cluster.node  # type: ignore[assignment]
    got = tmp_path / "via-crio.tar"
    with crio.checkpoint(name) as stream, got.open("wb") as out:
        assert list(fake.node_dir.glob("checkpoint-*.tar")), "the kubelet's archive is on the node while streaming"
        while chunk := stream.read(1 << 20):
            out.write(chunk)
    assert not list(fake.node_dir.glob("checkpoint-*.tar")), "the archive must be deleted from the node"
    ((fname, sha, size),) = node.archives
    assert fname.startswith(f"checkpoint-{pod}_desktops-desktop-")
    data = got.read_bytes()
    # the kubelet's archive minus its zero end blocks is a byte-exact prefix of the stream
    with tarfile.open(got) as tar:
        names = tar.getnames()
    assert names[-1] == POD_MEMBER and {"config.dump", "spec.dump"} <= set(names)
    print(f"\nkubelet archive {size} bytes (sha256 {sha[:12]}…), streamed {len(data)} bytes, {len(names)} members")
    # prefix check against the node's original: recompute its digest over the bytes we received
    assert _digest_of_original(data, size) == sha, "every byte the kubelet wrote must stream out unchanged"

    # Podman restores the archive obtained through the crio adapter: the same process continues
    crio.remove(name)
    with got.open("rb") as f:
        ref = podman.restore(f, size=got.stat().st_size)
    assert ref.container == pod and ref.state == "running"
    count, boot = wait_counter_above(crio, name, before[0])
    assert boot == before[1] and count > before[0], "Podman must continue the counter of the crio checkpoint"
    assert read_counter(crio, name)[1] == before[1]


def _end_of_members(data: bytes) -> int:
    """Offset where the last member before drsvc.pod.json ends (the kubelet's end blocks started there)."""
    offset = 0
    while offset + 512 <= len(data):
        header = data[offset : offset + 512]
        if header == b"\0" * 512:
            return offset
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        if info.name == POD_MEMBER:
            return offset
        offset += 512 + -(-info.size // 512) * 512
    return offset


def _digest_of_original(data: bytes, size: int) -> str:
    """sha256 of the kubelet's archive as the stream carries it: its members, then its zero padding."""
    end = _end_of_members(data)
    return hashlib.sha256(data[:end] + b"\0" * (size - end)).hexdigest()
