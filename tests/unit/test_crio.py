"""The crio:// adapter against the protocol fake (tests/fakes/kubelet.py) with the real kubernetes client.

Synthetic archives here; tests/integration/test_runtime_crio.py serves real Podman/CRIU archives.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.kubelet import FakeEnv, fake_env

from drsvc.containment import Escape
from drsvc.errors import BackendError, DrsvcError, InvalidInput, NotFound
from drsvc.runtimes import ContainerRuntime, open_runtime, registered_runtimes
from drsvc.runtimes.crio import CHECKPOINT_ANNOTATION, POD_MEMBER, CrioRuntime, Unsupported

LABELS = {"drsvc.desktop": "alice", "drsvc.volume": "rados://desktops/alice", "drsvc.tenant": "acme"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[FakeEnv]:
    with fake_env(tmp_path) as e:
        e.cluster.add_pod("alice", labels=LABELS, node="node-7", container_id="a" * 64)
        e.cluster.add_pod("not-a-desktop", labels={"app": "x"})
        yield e


def runtime(env: FakeEnv, **options: str) -> CrioRuntime:
    rt = open_runtime(env.crio_url(**options), configuration=env.kubelet.configuration())
    assert isinstance(rt, CrioRuntime) and isinstance(rt, ContainerRuntime)
    return rt


def drain(rt: CrioRuntime, name: str) -> bytes:
    with rt.checkpoint(name) as stream:
        return stream.read()


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


# ---------------------------------------------------------------------- URL
def test_crio_is_registered() -> None:
    assert "crio" in registered_runtimes()


@pytest.mark.parametrize(
    "url", ["crio://", "crio:///path/kubeconfig", "crio://desktops/x", "crio://desktops?nope=1", "crio://d?timeout=x"]
)
def test_malformed_urls(url: str) -> None:
    with pytest.raises(InvalidInput):
        open_runtime(url)


def test_bad_options(env: FakeEnv) -> None:
    with pytest.raises(InvalidInput, match="via"):
        runtime(env, via="ssh")
    with pytest.raises(InvalidInput, match="restore_mode"):
        runtime(env, restore_mode="magic")


# ---------------------------------------------------------------------- discovery
def test_discover_and_inspect(env: FakeEnv) -> None:
    rt = runtime(env)
    (d,) = rt.list_desktops()
    assert (d.desktop_id, d.container, d.volume, d.tenant, d.node) == (
        "alice",
        "desktops/alice/desktop",
        "rados://desktops/alice",
        "acme",
        "node-7",
    )
    assert d.container_id == "a" * 64 and d.state == "running" and d.image_id and d.network == "pod"
    for name in ("desktops/alice/desktop", "desktops/alice", "alice", "a" * 64):
        assert rt.inspect(name).container == "desktops/alice/desktop"
    for missing in ("nobody", "desktops/alice/sidecar", "other/alice", "b" * 64):
        with pytest.raises(NotFound):
            rt.inspect(missing)
    with pytest.raises(NotFound):
        rt.pause("nobody")
    with pytest.raises(Unsupported):
        rt.pause("alice")
    rt.remove("nobody")  # missing is fine
    assert rt.health()["version"] == "v1.30.0-fake"


# ---------------------------------------------------------------------- checkpoint
def _node_archive_bytes(env: FakeEnv) -> list[Path]:
    return sorted(env.node_dir.glob("checkpoint-*.tar"))


class Spy:
    """Keeps a copy of each archive the node writes (the adapter deletes it after streaming)."""

    def __init__(self, env: FakeEnv) -> None:
        self.inner = env.cluster.node
        self.copies: list[tuple[str, bytes]] = []
        env.cluster.node = self

    def checkpoint(self, pod: dict, container: str, dest: Path) -> None:
        self.inner.checkpoint(pod, container, dest)
        self.copies.append((dest.name, dest.read_bytes()))

    def start(self, pod: dict, container: str, archive: Path | None) -> str:
        return self.inner.start(pod, container, archive)

    def stop(self, pod: dict) -> None:
        self.inner.stop(pod)


@pytest.mark.parametrize("via", ["proxy", "kubelet"])
def test_checkpoint_streams_the_node_archive_and_deletes_it(env: FakeEnv, via: str) -> None:
    spy = Spy(env)
    certs = env.kubelet.certs
    options = {"via": via}
    if via == "kubelet":
        options.update(
            kubelet_url=env.kubelet.url,
            kubelet_ca=str(certs.ca),
            kubelet_cert=str(certs.client_cert),
            kubelet_key=str(certs.client_key),
        )
    rt = runtime(env, **options)
    data = drain(rt, "desktops/alice/desktop")
    ((fname, original),) = spy.copies
    assert fname.startswith("checkpoint-alice_desktops-desktop-") and fname.endswith(".tar")
    assert env.cluster.kubelet_calls == ["desktops/alice/desktop?timeout=5"]
    assert not _node_archive_bytes(env), "the archive must be deleted from the node"
    # every byte of the kubelet's archive up to its end-of-archive blocks passes unchanged
    body = original.rstrip(b"\0")
    assert data.startswith(body[: len(body) - len(body) % 512])
    got = members(data)
    assert {k: v for k, v in got.items() if k != POD_MEMBER} == members(original)
    pod = json.loads(got[POD_MEMBER])
    assert pod["metadata"]["name"] == "alice" and pod["drsvc"]["container"] == "desktop"
    assert "nodeName" not in pod["spec"] and "uid" not in pod["metadata"]


def test_archive_deleted_even_when_the_consumer_fails(env: FakeEnv) -> None:
    rt = runtime(env)
    with pytest.raises(RuntimeError), rt.checkpoint("alice") as stream:
        stream.read(100)
        raise RuntimeError("chunk store down")
    assert not _node_archive_bytes(env)


def test_checkpoint_not_on_this_node(env: FakeEnv, tmp_path: Path) -> None:
    rt = runtime(env, archive_root=str(tmp_path / "elsewhere"))
    with pytest.raises(BackendError, match="node-7"), rt.checkpoint("alice"):
        pass


def test_kubelet_without_client_certificate_is_401(env: FakeEnv) -> None:
    rt = runtime(env, via="kubelet", kubelet_url=env.kubelet.url, kubelet_ca=str(env.kubelet.certs.ca))
    with pytest.raises(BackendError, match="401") as e, rt.checkpoint("alice"):
        pass
    assert "kubelet" in str(e.value)


def test_kubelet_errors_become_drsvc_errors(env: FakeEnv) -> None:
    rt = runtime(env)
    # listed by the API server, gone on the node: kubelet 404 -> NotFound (exit 3)
    env.cluster.kubelet_gone.add("desktops/alice/desktop")
    with pytest.raises(NotFound, match="container desktop does not exist") as gone, rt.checkpoint("alice"):
        pass
    assert gone.value.exit_code == 3
    env.cluster.kubelet_gone.clear()
    # CRI failure: kubelet 500 -> BackendError carrying CRI-O's text
    env.cluster.fail_checkpoint.append((500, "rpc error: code = Unknown desc = criu failed: type NOTIFY errno 0"))
    with pytest.raises(BackendError, match="criu failed: type NOTIFY") as e, rt.checkpoint("alice"):
        pass
    assert e.value.exit_code == 1 and "500" in str(e.value)
    # feature gate off: the route does not exist -> says so, and is not "desktop not found"
    env.cluster.checkpoint_enabled = False
    with pytest.raises(BackendError, match="ContainerCheckpoint") as off, rt.checkpoint("alice"):
        pass
    assert not isinstance(off.value, NotFound)
    env.cluster.checkpoint_enabled = True
    # RBAC without nodes/proxy: the message names the missing permission
    env.cluster.allowed = {("", "pods", "get"), ("", "pods", "list")}
    with pytest.raises(BackendError, match=r"'create' on 'nodes/proxy'"), rt.checkpoint("alice"):
        pass
    assert not _node_archive_bytes(env)


def test_api_errors(env: FakeEnv) -> None:
    bad = open_runtime(env.crio_url(), configuration=env.kubelet.configuration(token="wrong"))
    with pytest.raises(BackendError, match="401"):
        bad.list_desktops()
    env.cluster.allowed = set()
    with pytest.raises(BackendError, match=r"'list' on 'pods' in namespace desktops"):
        runtime(env).list_desktops()


# ---------------------------------------------------------------------- restore
def test_restore_pushes_a_checkpoint_image_and_recreates_the_pod(env: FakeEnv) -> None:
    rt = runtime(env)
    data = drain(rt, "alice")
    rt.remove("alice")
    with pytest.raises(NotFound):
        rt.inspect("alice")
    ref = rt.restore(io.BytesIO(data))
    assert ref.container == "desktops/alice/desktop" and ref.state == "running"
    assert (ref.desktop_id, ref.volume, ref.tenant) == ("alice", LABELS["drsvc.volume"], "acme")
    assert ref.restored_at and ref.container_id != "a" * 64
    reg = env.registry
    methods = [m for m, _ in reg.requests]
    assert methods == ["POST", "PATCH", "PUT", "POST", "PATCH", "PUT", "PUT", "DELETE", "DELETE", "DELETE"]
    ((repo, tag),) = reg.pushed
    assert ref.image == f"{reg.host}/{repo}:{tag}"
    manifest = json.loads(reg.pushed[(repo, tag)])
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"][CHECKPOINT_ANNOTATION] == "desktop"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert layer["digest"] == "sha256:" + hashlib.sha256(data).hexdigest(), "the layer is the archive itself"
    assert env.cluster.node.restored["alice"] == data  # type: ignore[attr-defined]
    # the image holds every memory page of the desktop: once restored, it is gone from the registry
    assert reg.manifests == {} and reg.blobs == {}
    deleted = [path for m, path in reg.requests if m == "DELETE"]
    assert deleted[0].endswith("/manifests/sha256:" + hashlib.sha256(reg.pushed[(repo, tag)]).hexdigest())
    assert any(path.endswith(layer["digest"]) for path in deleted)


def test_a_registry_that_keeps_the_image_is_reported(env: FakeEnv, caplog: pytest.LogCaptureFixture) -> None:
    rt = runtime(env)
    data = drain(rt, "alice")
    rt.remove("alice")
    env.registry.deletes = False
    with caplog.at_level(logging.WARNING, logger="drsvc"):
        assert rt.restore(io.BytesIO(data)).state == "running"
    assert env.registry.blobs  # kept: deletes are off there
    text = caplog.text
    assert "plain HTTP" in text  # the fake registry speaks HTTP: warned before the push
    assert "kept it" in text and "memory" in text


def test_restore_fails_and_still_deletes_the_image(env: FakeEnv) -> None:
    rt = runtime(env)
    data = drain(rt, "alice")
    with pytest.raises(DrsvcError):
        rt.restore(io.BytesIO(data))  # alice still exists: the pod cannot be created
    assert env.registry.pushed and env.registry.manifests == {} and env.registry.blobs == {}


def test_restore_as_clone_without_network(env: FakeEnv) -> None:
    rt = runtime(env)
    data = drain(rt, "alice")
    clone = rt.restore(io.BytesIO(data), name="alice-drill", network="none", labels={"drsvc.desktop": "alice-drill"})
    assert clone.container == "desktops/alice-drill/desktop" and clone.desktop_id == "alice-drill"
    assert clone.network == "none" and clone.labels["drsvc.network"] == "none"
    assert rt.inspect("alice").state == "running"
    with pytest.raises(InvalidInput):
        rt.restore(io.BytesIO(data), name="x", network="bridge")


def test_restore_archive_mode_pins_the_node(env: FakeEnv) -> None:
    rt = runtime(env, restore_mode="archive", node="node-7")
    data = drain(rt, "alice")
    ref = rt.restore(io.BytesIO(data), name="alice-2")
    pod = env.cluster.pods[("desktops", "alice-2")]
    image = pod["spec"]["containers"][0]["image"]
    assert image.startswith("/var/lib/kubelet/checkpoints/restore-") and pod["spec"]["nodeName"] == "node-7"
    assert ref.state == "running" and not env.registry.requests
    # the node's copy of the archive (every memory page) is gone once CRI-O restored from it
    assert not list(env.node_dir.glob("restore-*"))


def test_archive_mode_writes_the_archive_for_root_alone(env: FakeEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = runtime(env, restore_mode="archive", node="node-7")
    data = drain(rt, "alice")
    seen: list[int] = []
    create = rt._create_pod

    def spy(*a: Any, **k: Any) -> Any:
        (path,) = env.node_dir.glob("restore-*")
        seen.append(stat.S_IMODE(path.stat().st_mode))
        return create(*a, **k)

    monkeypatch.setattr(rt, "_create_pod", spy)
    os.umask(0o022)
    rt.restore(io.BytesIO(data), name="alice-3")
    assert seen == [0o600] and not list(env.node_dir.glob("restore-*"))


def test_a_kubelet_archive_name_never_leaves_the_checkpoint_directory(env: FakeEnv, tmp_path: Path) -> None:
    rt = runtime(env)
    outside = tmp_path / "outside.tar"
    outside.write_bytes(b"not a checkpoint")
    (env.node_dir / "checkpoint-link.tar").symlink_to(outside)

    class Kubelet:
        def __init__(self, remote: str) -> None:
            self.remote = remote

        def checkpoint(self, *args: Any) -> tuple[int, bytes]:
            return 200, json.dumps({"items": [self.remote]}).encode()

    rt.kubelet = Kubelet("/var/lib/kubelet/checkpoints/checkpoint-link.tar")  # type: ignore[assignment]
    with pytest.raises(OSError), rt.checkpoint("alice"):
        pass  # a link is never opened, whatever it points at
    rt.kubelet = Kubelet("/var/lib/kubelet/checkpoints/..")  # type: ignore[assignment]
    with pytest.raises(Escape), rt.checkpoint("alice"):
        pass
    # the link itself is removed like any archive the kubelet named; what it pointed at never is
    assert outside.read_bytes() == b"not a checkpoint"
