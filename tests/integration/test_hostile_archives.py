"""Hostile checkpoint archives against the real Podman and Docker of the lab: refused, nothing outside touched.

Each attack starts from a real checkpoint of a busybox container and adds one trick a tenant (by
racing the runtime's own archiving) or anyone holding the key could plant: traversal in member
names and in ``deleted.files``, a symlink in the root filesystem diff with a file or a deletion
beneath it, hard links out of the diff, links and devices among the CRIU images. Each aims at a
victim directory on the host. The restore must fail with an integrity error (exit 4) naming the
member, leave the victim untouched and leave no container behind. (CRI-O runs the same archives
through the kubelet protocol fake: tests/unit/test_hostile_crio.py.)
"""

from __future__ import annotations

import io
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import ATTACKS, craft

from drsvc.errors import DrsvcError, IntegrityError, NotFound
from drsvc.runtimes import open_runtime
from drsvc.runtimes.base import ContainerRuntime

IMAGE = "localhost/drsvc-desk:busybox"


# ---------------------------------------------------------------------- runtimes
def _docker_socket() -> str | None:
    sock = os.environ.get("DRSVC_DOCKER_SOCKET")
    return sock if sock and Path(sock).exists() else None


@pytest.fixture(params=["podman", "docker"], scope="module")
def setup(request: pytest.FixtureRequest, lab: Any) -> Iterator[tuple[ContainerRuntime, str, bytes]]:
    """(runtime, a running container's name, a real checkpoint archive of it)."""
    kind = request.param
    name = f"security-{uuid.uuid4().hex[:6]}"
    if kind == "podman":
        cli = ["podman"]
        url = f"podman://{lab.podman_socket}"
    else:
        sock = _docker_socket()
        if sock is None:
            pytest.skip("lab Docker not running (dev/lab up --docker)")
        cli = ["/usr/bin/docker", "-H", f"unix://{sock}"]
        url = f"docker://{sock}"
    subprocess.run(
        [*cli, "run", "-d", "--name", name, IMAGE, "sh", "-c", "echo x >/tmp/f; exec sleep 100000"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    rt = open_runtime(url)
    try:
        with rt.checkpoint(name) as stream:
            archive = stream.read()
        yield rt, name, archive
    finally:
        subprocess.run([*cli, "rm", "-f", name], capture_output=True, timeout=120)
        rt.close()


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_hostile_archive_is_refused_and_touches_nothing(setup: tuple, attack: str, tmp_path: Path) -> None:
    rt, name, archive = setup
    victim_dir = tmp_path / "host"
    victim_dir.mkdir()
    (victim_dir / "victim").write_text("host data\n")
    before = sorted(os.listdir(victim_dir))
    crafted = craft(archive, **ATTACKS[attack](victim_dir))
    clone = f"{name}-{attack[:20]}"
    try:
        with pytest.raises(DrsvcError) as e:
            rt.restore(io.BytesIO(crafted), name=clone, size=len(crafted))
        assert isinstance(e.value, IntegrityError), f"{attack}: {type(e.value).__name__}: {e.value}"
        assert e.value.exit_code == 4
        assert (victim_dir / "victim").read_text() == "host data\n"
        assert sorted(os.listdir(victim_dir)) == before
        with pytest.raises(NotFound):
            rt.inspect(clone)
    finally:
        rt.remove(clone)


def test_the_untouched_archive_restores(setup: tuple) -> None:
    """The attacks are refused for what they add: the same archive without them restores."""
    rt, name, archive = setup
    clone = f"{name}-plain"
    try:
        ref = rt.restore(io.BytesIO(craft(archive)), name=clone, network="none")
        assert ref.state == "running"
    finally:
        rt.remove(clone)


def test_a_point_carrying_a_hostile_archive_stops_before_the_desktop_is_touched(
    drsvc_env: Any, make_fleet: Any, tmp_path: Path
) -> None:
    """Through the CLI: the archive is checked as it is fetched, before the container phase."""
    from drsvc.chunks import StreamRef

    [desktop] = make_fleet(1)
    backup = drsvc_env.cli("--json", "backup", desktop)
    assert backup.code == 0, backup.output
    point = backup.json()["results"][0]["point_id"]
    services = drsvc_env.services()
    manifest = services.hot.get_manifest(desktop, point)
    archive = b"".join(services.hot.read_stream(StreamRef.from_dict(manifest["checkpoint"]["stream"])))
    victim = tmp_path / "host"
    victim.mkdir()
    (victim / "victim").write_text("host data\n")
    # someone holding the key (or a tenant who raced the runtime's archiving) planted a symlink
    hostile = craft(archive, **ATTACKS["deleted-files-beneath-a-diff-symlink"](victim))
    store = services.hot.for_tenant(manifest["runtime"].get("tenant"))  # the desktop tenant's key
    manifest["checkpoint"]["stream"] = store.write_bytes(hostile).to_dict()
    store.put_manifest(desktop, point, manifest)
    runtime = services.runtime
    before = runtime.inspect(desktop)

    refused = drsvc_env.cli("restore", desktop, "--force")
    assert refused.code == 4, refused.output
    assert "deleted.files" in refused.stderr and "symlink" in refused.stderr and "Traceback" not in refused.output
    after = runtime.inspect(desktop)
    assert (after.container_id, after.state) == (before.container_id, "running")  # never removed
    assert (victim / "victim").read_text() == "host data\n" and os.listdir(victim) == ["victim"]
