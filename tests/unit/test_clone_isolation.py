"""Clones share nothing with their original: what each runtime's clone gets, and what a drill asserts."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes.kubelet import FakeEnv, fake_env

from drsvc.drill import check_isolation
from drsvc.errors import InvalidInput
from drsvc.restore import network_for
from drsvc.runtimes import open_runtime
from drsvc.runtimes.base import Isolation
from drsvc.runtimes.crio import CrioRuntime
from drsvc.runtimes.crio.pods import isolate_clone_pod, pod_isolation
from drsvc.runtimes.docker.unpack import container_body

SAVED = {
    "Name": "/desk-a",
    "Image": "sha256:" + "1" * 64,
    "Config": {"Image": "busybox", "Labels": {"drsvc.desktop": "desk-a"}, "Volumes": {"/cache": {}}},
    "HostConfig": {
        "NetworkMode": "bridge",
        "PidMode": "host",
        "IpcMode": "shareable",
        "Binds": ["/srv/tenant-a:/data", "home-a:/home:ro"],
        "Mounts": [{"Type": "tmpfs", "Target": "/scratch"}],
        "VolumesFrom": ["sidecar"],
        "PortBindings": {"5900/tcp": [{"HostPort": "5901"}]},
    },
    "Mounts": [
        {"Type": "bind", "Source": "/srv/tenant-a", "Destination": "/data", "RW": True},
        {
            "Type": "volume",
            "Name": "home-a",
            "Source": "/var/lib/docker/volumes/home-a/_data",
            "Destination": "/home",
            "RW": False,
        },
        {
            "Type": "volume",
            "Name": "x" * 64,
            "Source": "/var/lib/docker/volumes/x/_data",
            "Destination": "/cache",
            "RW": True,
        },
        {
            "Type": "volume",
            "Name": "side",
            "Source": "/var/lib/docker/volumes/side/_data",
            "Destination": "/shared",
            "RW": True,
        },
    ],
}


def test_a_docker_clone_gets_volumes_of_its_own_and_no_host_namespace() -> None:
    body = container_body(SAVED, image="busybox", name="desk-a-copy", network="none", labels=None)
    host = body["HostConfig"]
    assert host["NetworkMode"] == "none" and host["PidMode"] == "" and host["IpcMode"] == "private"
    assert host["Binds"] is None and host["VolumesFrom"] is None and "PortBindings" not in host
    mounts = {m["Target"]: m for m in host["Mounts"]}
    assert set(mounts) == {"/data", "/home", "/cache", "/shared", "/scratch"}
    for target in ("/data", "/home", "/cache", "/shared"):
        m = mounts[target]
        assert m["Type"] == "volume" and "Source" not in m  # a new, empty volume the clone owns
        assert m["VolumeOptions"]["Labels"] == {"drsvc.clone": "desk-a-copy"}
    assert mounts["/home"]["ReadOnly"] is True and mounts["/scratch"]["Type"] == "tmpfs"


def test_a_docker_restore_in_place_keeps_the_desktops_own_storage() -> None:
    body = container_body(SAVED, image="busybox", name=None, network=None, labels=None)
    assert body["HostConfig"]["Binds"] == SAVED["HostConfig"]["Binds"]
    assert body["HostConfig"]["VolumesFrom"] == ["sidecar"]


def test_a_docker_clone_never_keeps_the_hosts_network() -> None:
    saved = {**SAVED, "HostConfig": {**SAVED["HostConfig"], "NetworkMode": "host"}}
    with pytest.raises(InvalidInput, match="never shares it"):
        container_body(saved, image="busybox", name="c", network=None, labels=None)
    body = container_body(saved, image="busybox", name="c", network="none", labels=None)
    assert body["HostConfig"]["NetworkMode"] == "none"


POD_SPEC = {
    "hostNetwork": True,
    "hostPID": True,
    "hostIPC": True,
    "serviceAccountName": "desk",
    "containers": [{"name": "desktop", "image": "x"}],
    "volumes": [
        {"name": "home", "persistentVolumeClaim": {"claimName": "home-alice"}},
        {"name": "dev", "hostPath": {"path": "/dev/dri"}},
        {"name": "nfs", "nfs": {"server": "filer", "path": "/alice"}},
        {"name": "cfg", "configMap": {"name": "desk-config"}},
        {"name": "token", "projected": {"sources": []}},
        {"name": "tmp", "emptyDir": {}},
    ],
}


def test_a_crio_clone_pod_has_no_host_namespace_and_none_of_the_originals_storage() -> None:
    spec = isolate_clone_pod(POD_SPEC)
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    for name in ("home", "dev", "nfs"):
        assert volumes[name] == {"name": name, "emptyDir": {}}
    assert volumes["cfg"] == POD_SPEC["volumes"][3] and volumes["token"] == POD_SPEC["volumes"][4]
    assert pod_isolation({"spec": POD_SPEC}) == (
        ["network", "pid", "ipc"],
        ["hostPath:/dev/dri", "nfs:nfs", "pvc:home-alice"],
    )
    assert pod_isolation({"spec": spec}) == ([], [])


@pytest.fixture
def env(tmp_path: Path) -> Iterator[FakeEnv]:
    with fake_env(tmp_path) as e:
        e.cluster.add_pod("alice", labels={"drsvc.desktop": "alice"}, node="node-7", container_id="a" * 64)
        yield e


def test_a_crio_clone_is_created_isolated(env: FakeEnv) -> None:
    rt = open_runtime(env.crio_url(), configuration=env.kubelet.configuration())
    assert isinstance(rt, CrioRuntime)
    pod = env.cluster.pods[("desktops", "alice")]
    pod["spec"].update(hostNetwork=True, volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "home-a"}}])
    original = rt.isolation("alice")
    assert original.host_namespaces == ["network"] and original.sources == ["pvc:home-a"]
    with rt.checkpoint("alice") as stream:
        archive = stream.read()
    rt.restore(io.BytesIO(archive), name="alice-drill", network="none")
    clone = rt.isolation("alice-drill")
    assert clone.network == "none" and clone.host_namespaces == [] and clone.sources == []
    assert check_isolation(clone, original)["isolated"]


def test_the_drill_judges_isolation() -> None:
    original = Isolation("bridge", ["eth0"], [], ["/srv/a", "vol-a"])
    good = Isolation("none", [], [], ["anon-1"])
    assert check_isolation(good, original) == {
        "isolated": True,
        "problems": [],
        "clone": good.document(),
        "original": original.document(),
    }
    bad = Isolation("bridge", ["eth0"], ["pid"], ["/srv/a", "pvc:home"])
    problems = check_isolation(bad, original)["problems"]
    assert len(problems) == 5 and any("/srv/a" in p for p in problems)
    assert not check_isolation(None, original)["isolated"]  # never assumed


def _plan(clone: bool, network: str | None) -> Any:
    return SimpleNamespace(
        target=SimpleNamespace(clone=clone), manifest={"runtime": {"network": network}}, desktop={"id": "desk-a"}
    )


def test_clones_get_no_network_unless_asked() -> None:
    assert network_for(_plan(True, "bridge"), None) == "none"
    assert network_for(_plan(False, "bridge"), None) is None  # in place: the desktop's own
    assert network_for(_plan(True, "bridge"), "keep") is None
    assert network_for(_plan(True, "bridge"), "lab-net") == "lab-net"
    with pytest.raises(InvalidInput, match="host's network"):
        network_for(_plan(True, "host"), "keep")
    with pytest.raises(InvalidInput):
        network_for(_plan(False, "bridge"), "host")


# ---------------------------------------------------------------------- Podman (config.dump / spec.dump of 4.3)
PODMAN_SPEC = {
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/data-bind", "type": "bind", "source": "/srv/tenant-a", "options": ["rw", "rbind"]},
        {
            "destination": "/data-vol",
            "type": "bind",
            "source": "/var/lib/containers/storage/volumes/home-a/_data",
            "options": ["rw", "rbind"],
        },
        {"destination": "/etc/hosts", "type": "bind", "source": "/run/containers/storage/x/userdata/hosts"},
    ],
    "linux": {"namespaces": [{"type": "network", "path": "/run/netns/n1"}, {"type": "uts"}, {"type": "mount"}]},
}
PODMAN_CONFIG = {
    "name": "desk-a",
    "namedVolumes": [{"volumeName": "home-a", "dest": "/data-vol", "options": ["rw"]}],
    "userVolumes": ["/data-bind", "/data-vol"],
    "pidNsCtr": "other-container",
    "spec": PODMAN_SPEC,
}


def test_a_podman_clone_gets_its_own_volumes_and_bind_sources(tmp_path: Path) -> None:
    import json

    from drsvc.runtimes.podman_clone import CloneRewrite, clone_volume, remove_clone_storage

    (tmp_path / "srv").mkdir()
    rw = CloneRewrite("desk-a-copy", root=tmp_path / "clones")
    cfg = json.loads(rw.config(json.dumps(PODMAN_CONFIG).encode()))
    spec = json.loads(rw.spec(json.dumps(PODMAN_SPEC).encode()))
    assert cfg["namedVolumes"][0]["volumeName"] == "drsvc-clone-desk-a-copy-0" and "pidNsCtr" not in cfg
    assert rw.renames == {"volumes/home-a.tar": "volumes/drsvc-clone-desk-a-copy-0.tar"}
    for doc in (cfg["spec"], spec):
        mounts = {m["destination"]: m["source"] for m in doc["mounts"]}
        assert mounts["/data-vol"] == "/var/lib/containers/storage/volumes/drsvc-clone-desk-a-copy-0/_data"
        assert mounts["/data-bind"] == str(tmp_path / "clones" / "desk-a-copy" / "0")
        assert mounts["/etc/hosts"].endswith("userdata/hosts")  # the runtime's own, re-made by Podman
        kinds = {ns["type"] for ns in doc["linux"]["namespaces"]}
        assert {"pid", "ipc"} <= kinds  # were the host's
    assert (tmp_path / "clones" / "desk-a-copy" / "0").is_dir()
    assert clone_volume("desk-a-copy", "drsvc-clone-desk-a-copy-0")
    assert not clone_volume("desk-a", "drsvc-clone-desk-a-copy-0") and not clone_volume("desk-a-copy", "home-a")
    remove_clone_storage("desk-a-copy", root=tmp_path / "clones")
    remove_clone_storage("../srv", root=tmp_path / "clones")  # never outside its root
    assert not (tmp_path / "clones" / "desk-a-copy").exists() and (tmp_path / "srv").exists()
