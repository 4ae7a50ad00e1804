"""A base image a restore loaded, left by a kill -9: real Podman, `drsvc cleanup` through the CLI.

A restore loads the desktop's base image when the runtime lacks it, and records that
(``loaded-image``) first. Here a child process does exactly that (``RestoreEffects.loading``, then
``load_image``) and is killed at ``after-image-loaded``: cleanup must remove the image, unless a
container runs from it by then (then it is kept, and says so in the catalog).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from drsvc.catalog import Catalog
from drsvc.runtimes import open_runtime
from drsvc.runtimes.podman import PodmanRuntime

pytestmark = pytest.mark.integration

LAB_IMAGE = "localhost/drsvc-desk:busybox"

CHILD = """
import sys
from types import SimpleNamespace
from drsvc import faults
from drsvc.catalog import Catalog
from drsvc.restore_effects import RestoreEffects
from drsvc.runtimes import open_runtime

url, catalog_path, image_id, saved = sys.argv[1:5]
catalog = Catalog.open(catalog_path)
runtime = open_runtime(url)
effects = RestoreEffects(catalog, SimpleNamespace(desktop={"id": "intents-desk"}), 1, runtime=runtime)
with effects.owner:
    effects.loading(image_id)  # what RestoreJob._fetch records before it loads
    with open(saved, "rb") as body:
        runtime.load_image(body)
    faults.point("after-image-loaded")
print("not killed")
"""


def podman(*args: str) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def intent_states(catalog_path: Path) -> list[str]:
    catalog = Catalog.open(catalog_path)
    try:
        return [r["state"] for r in catalog.query("SELECT state FROM intents WHERE kind = 'loaded-image' ORDER BY id")]
    finally:
        catalog.close()


def test_an_image_a_killed_restore_loaded_is_removed_by_cleanup_unless_a_container_uses_it(
    lab, drsvc_env, tmp_path: Path
) -> None:
    runtime = open_runtime(f"podman://{lab.podman_socket}")
    assert isinstance(runtime, PodmanRuntime)
    name = f"intents-{uuid.uuid4().hex[:8]}"
    ref = f"localhost/{name}:base"
    # a base image of its own (the lab's image plus a label: a new id, the same layers)
    (tmp_path / "Containerfile").write_text(f"FROM {LAB_IMAGE}\nLABEL drsvc.test={name}\n")
    podman("build", "--pull=never", "-q", "-t", ref, str(tmp_path))
    image_id = podman("image", "inspect", "--format", "{{.Id}}", ref)
    saved = tmp_path / "image.tar"
    with runtime.save_image(ref) as stream, saved.open("wb") as out:
        while chunk := stream.read(1 << 20):
            out.write(chunk)
    user = f"{name}-user"
    try:
        podman("rmi", ref)
        assert not runtime.image_exists(image_id)

        def killed_restore() -> None:
            env = {**os.environ, "DRSVC_FAULT": "after-image-loaded:kill"}
            argv = [sys.executable, "-c", CHILD, runtime.url, str(drsvc_env.root / "catalog.db"), image_id, str(saved)]
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == -9, done.stdout + done.stderr
            assert runtime.image_exists(image_id), "the killed restore loaded the image"

        killed_restore()
        listed = drsvc_env.cli("catalog", "check")
        assert f"loaded-image {image_id}" in listed.output, listed.output
        cleaned = drsvc_env.cli("cleanup")
        assert cleaned.code == 0, cleaned.output
        assert not runtime.image_exists(image_id), "cleanup removes the image no container uses"
        assert intent_states(drsvc_env.root / "catalog.db") == ["undone"]

        killed_restore()
        podman("create", "--name", user, image_id, "true")  # a container runs from it now
        cleaned = drsvc_env.cli("cleanup")
        assert cleaned.code == 0, cleaned.output
        assert runtime.image_exists(image_id), "an image a container uses stays"
        assert intent_states(drsvc_env.root / "catalog.db") == ["undone", "kept"]
    finally:
        subprocess.run(["podman", "rm", "-f", user], capture_output=True, timeout=60)
        subprocess.run(["podman", "rmi", "-f", image_id], capture_output=True, timeout=60)
        assert runtime.image_exists(LAB_IMAGE), "the lab's image must survive"
        runtime.close()
