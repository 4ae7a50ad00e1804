"""Docker runtime on the real lab: the shared runtime suite plus the CRIU freeze hook under dockerd.

Docker is optional in the lab (``dev/lab up --docker``). The ``docker_socket`` fixture uses a
running lab dockerd or starts it with ``dev/lab up --docker`` (never with DRSVC_LAB_NO_START=1);
when dockerd cannot run here the tests are skipped with the reason, or fail when
DRSVC_LAB_REQUIRED=1 and DRSVC_LAB_DOCKER=1 (CI that promises Docker).

Desktops come from ``dev/lab fleet N --runtime docker`` (busybox, labelled like Podman's) under a
per-test prefix; the fixture removes them, their clones and their RADOS namespaces afterwards.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from runtime_suite import RuntimeSuite

from drsvc.errors import DrsvcError, InvalidInput
from drsvc.runtimes import open_runtime
from drsvc.runtimes.docker import DockerRuntime
from drsvc.runtimes.freeze import FreezeBatch, hook_installed, install_hook

IMAGE = "localhost/drsvc-desk:busybox"
DOCKER_BIN = "/usr/bin/docker"  # not `docker`: another client may shadow it in /usr/local/bin
FLEET_PY = Path(__file__).resolve().parents[2] / "dev" / "fleet.py"


def _docker_answers(sock: str) -> str | None:
    """None if the lab's dockerd answers with experimental features on, else why not."""
    if not Path(sock).exists():
        return f"no socket at {sock}"
    rt = DockerRuntime(sock, timeout=20)
    try:
        h = rt.health()
    except DrsvcError as e:
        return str(e)
    finally:
        rt.close()
    return None if h.get("experimental") else "dockerd runs without --experimental"


@pytest.fixture(scope="session")
def docker_socket(lab: Any) -> str:
    """The lab's Docker socket, with dockerd started (``dev/lab up --docker``) when needed."""
    sock = lab.env.get("DRSVC_DOCKER_SOCKET") or str(lab.dir / "docker.sock")
    required = os.environ.get("DRSVC_LAB_REQUIRED") == "1" and os.environ.get("DRSVC_LAB_DOCKER") == "1"

    def unavailable(reason: str) -> None:
        if required:
            pytest.fail(f"Docker required (DRSVC_LAB_DOCKER=1) but unavailable: {reason}", pytrace=False)
        print(f"\nDocker tests skipped: {reason}")
        pytest.skip(f"lab Docker unavailable: {reason}")

    why = _docker_answers(sock)
    if why is None:
        return sock
    if os.environ.get("DRSVC_LAB_NO_START") == "1":
        unavailable(f"dockerd not running ({why}) and DRSVC_LAB_NO_START=1")
    t = time.monotonic()
    up = lab.run("up", "--docker", timeout=1200, check=False)
    if up.returncode != 0:
        tail = "\n".join(up.stderr.strip().splitlines()[-20:])
        unavailable(f"`dev/lab up --docker` failed after {time.monotonic() - t:.0f} s:\n{tail}")
    why = _docker_answers(sock)
    if why is not None:
        unavailable(f"dockerd still not answering after `dev/lab up --docker`: {why}")
    return sock


def docker_cli(sock: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER_BIN, "-H", f"unix://{sock}", *args], capture_output=True, text=True, timeout=timeout)


class DockerFleet:
    """``make_docker_fleet(n, seed=42, data_mib=1)``: busybox desktops in Docker with RADOS data."""

    def __init__(self, lab: Any, sock: str) -> None:
        self.lab, self.sock = lab, sock
        self.prefix = f"dk{uuid.uuid4().hex[:6]}"
        self.created: list[str] = []

    def __call__(self, n: int, seed: int = 42, data_mib: float = 1) -> list[str]:
        ids = [f"{self.prefix}-{i:03d}" for i in range(1, n + 1)]
        self.created += [d for d in ids if d not in self.created]
        self.lab.run(
            "fleet",
            str(n),
            "--runtime",
            "docker",
            "--seed",
            str(seed),
            "--data-mib",
            f"{data_mib:g}",
            "--prefix",
            self.prefix,
            timeout=600,
        )
        return ids

    def cleanup(self) -> None:
        names = docker_cli(self.sock, "ps", "-a", "--format", "{{.Names}}").stdout.split()
        victims = [n for n in names if n.startswith(self.prefix + "-")]
        if victims:
            docker_cli(self.sock, "rm", "-f", *victims)
        if self.created:
            subprocess.run(
                ["/usr/bin/python3", str(FLEET_PY), "purge", "--conf", self.lab.ceph_conf, "--pool", "desktops"]
                + [a for d in self.created for a in ("--desktop", d)],
                capture_output=True,
                timeout=300,
            )


@pytest.fixture
def make_docker_fleet(lab: Any, docker_socket: str) -> Iterator[DockerFleet]:
    fleet = DockerFleet(lab, docker_socket)
    yield fleet
    fleet.cleanup()


@pytest.fixture(scope="module")
def docker_runtime(docker_socket: str) -> Iterator[DockerRuntime]:
    rt = open_runtime(f"docker://{docker_socket}")
    assert isinstance(rt, DockerRuntime)
    yield rt
    rt.close()


class TestDockerRuntime(RuntimeSuite):
    @pytest.fixture
    def runtime(self, docker_runtime: DockerRuntime) -> DockerRuntime:
        return docker_runtime

    @pytest.fixture
    def make_desktop(self, make_docker_fleet: DockerFleet) -> Callable[[int], list[str]]:
        return lambda n: make_docker_fleet(n, data_mib=0.1)

    @pytest.fixture
    def scratch_image(self, docker_runtime: DockerRuntime) -> Iterator[tuple[str, Callable[[str], None]]]:
        repo, tag = f"localhost/drsvc-suite-{uuid.uuid4().hex[:8]}", "rt"
        docker_runtime.tag_image(IMAGE, repo, tag)

        def drop(ref: str) -> None:
            docker_runtime.untag_image(ref, repo, tag)

        yield f"{repo}:{tag}", drop
        if docker_runtime.image_exists(f"{repo}:{tag}"):
            drop(f"{repo}:{tag}")
        assert docker_runtime.image_exists(IMAGE), "the lab's image must survive the suite"


# ---------------------------------------------------------------------- Docker specifics
def test_health_reports_experimental_and_criu(docker_runtime: DockerRuntime) -> None:
    h = docker_runtime.health()
    assert h["runtime"] == "docker" and h["experimental"] is True and h["checkpoint_ready"] is True
    assert h["criu_version"] and h["oci_runtime"]


def test_malformed_urls_are_rejected() -> None:
    from drsvc.errors import InvalidInput

    for bad in ("docker://host/sock", "docker://relative", "docker:///x.sock?tls=1"):
        with pytest.raises(InvalidInput):
            open_runtime(bad)


def test_archive_layout_and_rootfs_changes(
    docker_runtime: DockerRuntime, make_docker_fleet: DockerFleet, tmp_path: Path
) -> None:
    """Files added, changed and deleted in the container's layer come back with the restore."""
    import json
    import tarfile

    rt = docker_runtime
    (name,) = make_docker_fleet(1, data_mib=0.1)
    code, out = rt.exec(
        name, ["sh", "-c", "mkdir -p /opt/app && echo hello > /opt/app/a.txt && rm /bin/vi && echo x > /etc/motd"]
    )
    assert code == 0, out
    archive = tmp_path / "ckpt.tar"
    t = time.monotonic()
    with rt.checkpoint(name) as stream, archive.open("wb") as f:
        while chunk := stream.read(1 << 20):
            f.write(chunk)
    seconds = time.monotonic() - t
    with tarfile.open(archive) as tf:
        names = tf.getnames()
        assert names[:3] == ["config.dump", "docker-config.json", "spec.dump"]
        assert "checkpoint/inventory.img" in names and "rootfs-diff.tar" in names and "deleted.files" in names
        config = json.load(tf.extractfile("config.dump"))  # type: ignore[arg-type]
        assert config["name"] == name and config["runtime"] == "docker"
        assert json.load(tf.extractfile("deleted.files")) == ["/bin/vi"]  # type: ignore[arg-type]
        with tarfile.open(fileobj=tf.extractfile("rootfs-diff.tar")) as diff:
            assert {"opt/app/a.txt", "etc/motd", "data/counter"} <= set(diff.getnames())
    # nothing of Docker's checkpoint is left behind
    ckpts = rt.client.root_dir() / "containers" / rt.inspect(name).container_id / "checkpoints"
    assert not ckpts.exists() or not list(ckpts.iterdir())
    rt.remove(name)
    t = time.monotonic()
    with archive.open("rb") as f:
        ref = rt.restore(f)
    restore_seconds = time.monotonic() - t
    print(f"\ncheckpoint {seconds:.2f} s ({archive.stat().st_size} bytes), restore {restore_seconds:.2f} s")
    assert ref.state == "running" and ref.restored_at
    assert rt.exec(name, ["cat", "/opt/app/a.txt"]) == (0, "hello\n")
    assert rt.exec(name, ["cat", "/etc/motd"]) == (0, "x\n")
    assert rt.exec(name, ["test", "-e", "/bin/vi"])[0] == 1
    assert "drsvc.restored-at" not in ref.labels


def test_restore_of_garbage_leaves_no_container(docker_runtime: DockerRuntime) -> None:
    import io

    with pytest.raises(DrsvcError):
        docker_runtime.restore(io.BytesIO(b"not a tar at all" * 100), name="drsvc-suite-garbage")
    from drsvc.errors import NotFound

    with pytest.raises(NotFound):
        docker_runtime.inspect("drsvc-suite-garbage")


# ---------------------------------------------------------------------- freeze hook under dockerd
@pytest.fixture(scope="module")
def freeze_hook(lab: Any) -> None:
    install_hook()
    assert hook_installed()


def host_counter(rootfs: str) -> tuple[int, str]:
    """The counter read from the host (no exec: works while the container is frozen)."""
    path = Path(rootfs) / "data" / "counter"
    last = ""
    for _ in range(50):
        last = path.read_text() if path.exists() else ""
        parts = last.split()
        if len(parts) == 2 and parts[0].isdigit():
            return int(parts[0]), parts[1]
        time.sleep(0.01)
    raise AssertionError(f"unreadable counter {last!r} at {path}")


def test_dockerd_checkpoint_honours_the_freeze_hook(
    docker_runtime: DockerRuntime, make_docker_fleet: DockerFleet, freeze_hook: None
) -> None:
    """dockerd -> containerd -> runc -> CRIU reads /etc/criu/runc.conf: the rendezvous holds."""
    rt = docker_runtime
    (name,) = make_docker_fleet(1, data_mib=0.1)
    ref = rt.inspect(name)
    rootfs = rt.rootfs_path(name)
    assert rootfs
    result: dict[str, Any] = {}

    def work() -> None:
        t = time.monotonic()
        try:
            with rt.checkpoint(name) as stream:
                result["bytes"] = len(stream.read())
        except BaseException as e:
            result["error"] = e
        result["seconds"] = time.monotonic() - t

    with FreezeBatch([ref.container_id], timeout=20) as fb:
        worker = threading.Thread(target=work, daemon=True)
        t0 = time.monotonic()
        worker.start()
        assert fb.wait_frozen(timeout=15) == {ref.container_id}, result.get("error")
        t_frozen = time.monotonic() - t0
        c1 = host_counter(rootfs)
        time.sleep(0.6)
        assert host_counter(rootfs) == c1, "processes must stand still while the hook waits in post-dump"
        assert worker.is_alive()
        fb.release()
        worker.join(20)
        window = fb.freeze_window(ref.container_id)
        timings = fb.timings(ref.container_id)
    assert "error" not in result, result.get("error")
    print(
        f"\ndocker: frozen after {t_frozen:.2f} s, window {window:.2f} s, "
        f"checkpoint call {result['seconds']:.2f} s, {result['bytes']} bytes, actions {sorted(timings)}"
    )
    assert result["bytes"] > 10_000
    assert window is not None and window >= 0.6  # it stood still while we held it
    assert {"pre-dump", "post-dump", "network-unlock"} <= set(timings)
    deadline = time.monotonic() + 5
    while host_counter(rootfs)[0] <= c1[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_counter(rootfs)[0] > c1[0] and host_counter(rootfs)[1] == c1[1]


# ---------------------------------------------------------------------- forget
def test_forget_removes_exactly_the_loaded_image_it_names_and_refuses_anything_else(
    docker_runtime: DockerRuntime, make_docker_fleet: DockerFleet
) -> None:
    """``forget("loaded-image", ID)`` (what cleanup calls after a killed restore loaded a base image):
    that image and nothing beside it; gone already is no error; an image another desktop's
    container runs from is kept; a target that is not a full image id is refused, whatever dockerd
    would make of it (a stopped container of another desktop is what a path would reach)."""
    [desktop] = make_docker_fleet(1, data_mib=0.1)
    api = docker_runtime.api
    mark = uuid.uuid4().hex[:8]
    repo = f"localhost/failsafe-forget-{mark}"
    victim = f"{make_docker_fleet.prefix}-victim"  # the fleet's cleanup removes it

    def scratch(n: int) -> str:
        """An image of its own id (the lab image plus a label), as a restore's load would leave one."""
        cid = api.create_container(IMAGE, command=["true"])["Id"]
        try:
            return str(api.commit(cid, repository=repo, tag=str(n), changes=f"LABEL failsafe.forget={mark}-{n}")["Id"])
        finally:
            api.remove_container(cid, force=True)

    loaded, shared = scratch(1), scratch(2)
    try:
        # another desktop's container of the `shared` image (which has a second name), and a stopped
        # container from the lab image
        docker_runtime.tag_image(shared, repo, "shared")
        api.create_container(shared, command=["true"], name=f"{make_docker_fleet.prefix}-user")
        api.create_container(IMAGE, command=["true"], name=victim, labels={"drsvc.desktop": victim})
        victim_id = docker_runtime.client.inspect_raw(victim)["Id"]
        hostile = [
            f"../containers/{victim}",
            f"../../containers/{victim}",
            f"sha256:../../containers/{victim}",
            f"{repo}:shared",  # a reference (of the image another desktop uses), not the id a restore loaded
            desktop,  # another desktop's id
            loaded[: len("sha256:") + 12],  # a short prefix
            "",
        ]
        for target in hostile:
            with pytest.raises(InvalidInput, match="not a full image id"):
                docker_runtime.forget("loaded-image", target)
        with pytest.raises(InvalidInput):
            docker_runtime.forget("checkpoint-archive", loaded)
        # a 64-hex id that is a container's, not an image's: nothing to forget, nothing removed
        assert docker_runtime.forget("loaded-image", victim_id) == "undone"

        assert docker_runtime.forget("loaded-image", shared) == "kept"
        assert docker_runtime.forget("loaded-image", loaded) == "undone"
        assert not docker_runtime.image_exists(loaded)
        assert docker_runtime.forget("loaded-image", loaded) == "undone"  # gone already: no error
        assert docker_runtime.forget("loaded-image", loaded.removeprefix("sha256:")) == "undone"

        assert docker_runtime.image_exists(shared), "an image another desktop's container uses was removed"
        assert docker_runtime.image_exists(f"{repo}:shared"), "a name of another desktop's image was removed"
        assert docker_runtime.image_exists(IMAGE), "the lab image went"
        assert docker_runtime.client.inspect_raw(victim)["Id"] == victim_id, "another container was touched"
        assert docker_runtime.inspect(desktop).state == "running"
    finally:
        for name in (f"{make_docker_fleet.prefix}-user", victim):
            with suppress(Exception):
                api.remove_container(name, force=True)
        for n in ("1", "2", "shared"):
            with suppress(Exception):
                api.remove_image(f"{repo}:{n}", force=True)
