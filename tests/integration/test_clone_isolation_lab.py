"""Clones share nothing with their original on the real Podman and Docker: no network, none of its storage.

A desktop with a bind mount of a host directory and a named volume is checkpointed and restored as
a clone: the clone's mounts are its own (a new volume, an empty directory of its own), what it
writes there never reaches the original's, it has no network but loopback, and removing it takes
its storage along. Through the CLI, a drill records the proof and ``restore --as`` gets no network
unless asked.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_suite import read_counter

from drsvc.catalog import Catalog
from drsvc.drill import check_isolation
from drsvc.errors import NotFound
from drsvc.runtimes import open_runtime
from drsvc.runtimes.base import ContainerRuntime

IMAGE = "localhost/drsvc-desk:busybox"


@pytest.fixture(params=["podman", "docker"])
def desktop(
    request: pytest.FixtureRequest, lab: Any, tmp_path: Path
) -> Iterator[tuple[ContainerRuntime, str, list[str], Path]]:
    """(runtime, container name, its CLI, the host directory bind-mounted at /data-bind)."""
    name = f"security-iso-{uuid.uuid4().hex[:6]}"
    if request.param == "podman":
        cli, url = ["podman"], f"podman://{lab.podman_socket}"
    else:
        sock = os.environ.get("DRSVC_DOCKER_SOCKET")
        if not sock or not Path(sock).exists():
            pytest.skip("lab Docker not running (dev/lab up --docker)")
        cli, url = ["/usr/bin/docker", "-H", f"unix://{sock}"], f"docker://{sock}"
    host_dir = tmp_path / "tenant-data"
    host_dir.mkdir()
    (host_dir / "f").write_text("production\n")
    volume = f"{name}-vol"
    subprocess.run([*cli, "volume", "create", volume], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [
            *cli,
            "run",
            "-d",
            "--name",
            name,
            "-v",
            f"{host_dir}:/data-bind",
            "-v",
            f"{volume}:/data-vol",
            IMAGE,
            "sh",
            "-c",
            "echo v >/data-vol/g; exec sleep 100000",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    rt = open_runtime(url)
    try:
        yield rt, name, cli, host_dir
    finally:
        subprocess.run([*cli, "rm", "-f", name], capture_output=True, timeout=120)
        subprocess.run([*cli, "volume", "rm", "-f", volume], capture_output=True, timeout=60)
        rt.close()


def test_a_clone_has_no_network_and_none_of_the_originals_storage(desktop: tuple) -> None:
    rt, name, cli, host_dir = desktop
    with rt.checkpoint(name) as stream:
        archive = stream.read()
    clone = f"{name}-clone"
    try:
        rt.restore(io.BytesIO(archive), name=clone, network="none", labels={"drsvc.clone-of": name})
        original, isolated = rt.isolation(name), rt.isolation(clone)  # type: ignore[attr-defined]
        verdict = check_isolation(isolated, original)
        assert verdict["isolated"], verdict
        assert isolated.network == "none" and isolated.interfaces == [] and isolated.host_namespaces == []
        assert str(host_dir) in original.sources and not set(isolated.sources) & set(original.sources)
        # what the clone writes where the original's data was stays the clone's
        code, out = rt.exec(clone, ["sh", "-c", "ls /data-bind; echo clone >/data-bind/f; echo clone >/data-vol/g"])
        assert code == 0 and "f" not in out.split(), out  # an empty directory of its own
        assert (host_dir / "f").read_text() == "production\n"
        assert rt.exec(name, ["cat", "/data-vol/g"])[1].strip() == "v"
    finally:
        rt.remove(clone)
    with pytest.raises(NotFound):
        rt.inspect(clone)
    volumes = subprocess.run([*cli, "volume", "ls", "-q"], capture_output=True, text=True, timeout=60).stdout.split()
    assert not [v for v in volumes if clone in v], volumes  # its own storage went with it


def test_a_drill_proves_and_records_the_isolation(drsvc_env: Any, make_fleet: Any) -> None:
    [d] = make_fleet(1)
    assert drsvc_env.cli("backup", d).code == 0
    drill = drsvc_env.cli("--json", "drill", d)
    assert drill.code == 0, drill.output
    [result] = drill.json()["results"]
    assert result["passed"] and result["isolation"]["isolated"], result
    assert result["isolation"]["clone"]["network"] == "none" and result["isolation"]["clone"]["interfaces"] == []
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    [row] = catalog.query("SELECT isolation FROM drill_results")
    assert json.loads(row["isolation"])["isolated"] is True


def test_restore_as_gets_no_network_unless_asked(drsvc_env: Any, make_fleet: Any) -> None:
    [d] = make_fleet(1)
    runtime = drsvc_env.services().runtime
    original_network = runtime.inspect(d).network
    assert original_network not in (None, "none")
    assert drsvc_env.cli("backup", d).code == 0
    isolated, kept = f"{d}-isolated", f"{d}-kept"
    try:
        assert drsvc_env.cli("restore", d, "--as", isolated).code == 0
        assert runtime.inspect(isolated).network == "none"
        read_counter(runtime, isolated)  # and it runs on
        done = drsvc_env.cli("restore", d, "--as", kept, "--network", "keep")
        assert done.code == 0, done.output
        assert runtime.inspect(kept).network == original_network
    finally:
        for clone in (isolated, kept):
            runtime.remove(clone)
            drsvc_env.services().volume(f"rados://desktops/{clone}").purge()
