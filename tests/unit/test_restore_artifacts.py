"""What a runtime's restore leaves while it runs, recorded before it exists and cleaned up after a kill.

A CRI-O restore pushes the checkpoint image to a registry (``restore_mode=image``) or writes the
archive onto the node (``archive``): every memory page of the desktop, in plaintext. The adapter
deletes them in a ``finally``, which a kill -9 skips. Here a child process restores through the
crio:// adapter against the protocol fakes (tests/fakes/kubelet.py: API server, kubelet, OCI
registry) and is killed by ``DRSVC_FAULT`` right after the effect; ``drsvc cleanup`` (the job)
must then find the intent and remove exactly that artifact.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture)
from fakes.kubelet import FakeEnv, fake_env

from drsvc.cleanup import CleanupJob, leftover_lines
from drsvc.errors import BackendError, InvalidInput
from drsvc.intents import Intents, Owner, leftovers, pending
from drsvc.restore_effects import leaving
from drsvc.runtimes import open_runtime
from drsvc.runtimes.crio import CrioRuntime

LABELS = {"drsvc.desktop": "alice", "drsvc.volume": "rados://desktops/alice", "drsvc.tenant": "acme"}

# The restoring process: an owner lease, the restore's intent (``leaving``, as RestoreJob records
# it), then the adapter's restore with the token, killed by the fault point named in DRSVC_FAULT.
CHILD = """
import sys
from drsvc.catalog import Catalog
from drsvc.intents import Intents, Owner
from drsvc.restore_effects import leaving
from drsvc.runtimes import open_runtime

url, catalog_path, archive = sys.argv[1:4]
catalog = Catalog.open(catalog_path)
runtime = open_runtime(url)
with Owner(catalog) as owner, leaving(Intents(catalog, owner.name), runtime, restore=1) as token:
    with open(archive, "rb") as body:
        runtime.restore(body, name="alice-clone", token=token)
print("restored")
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[FakeEnv]:
    with fake_env(tmp_path / "fake") as e:
        e.cluster.add_pod("alice", labels=LABELS, node="node-7", container_id="a" * 64)
        yield e


@pytest.fixture
def kit(tmp_path: Path, aws: None) -> Iterator[ColdKit]:  # noqa: F811
    kit = ColdKit(tmp_path / "kit")
    yield kit
    kit.catalog.close()


def crio_url(env: FakeEnv, tmp_path: Path, **options: str) -> str:
    return env.crio_url(kubeconfig=str(env.kubelet.kubeconfig(tmp_path / "kubeconfig")), **options)


def restore_killed_at(point: str, env: FakeEnv, kit: ColdKit, url: str, tmp_path: Path) -> None:
    """A restore through ``url`` in a child process, SIGKILLed at ``point``; the runtime is the kit's."""
    runtime = open_runtime(url)
    assert isinstance(runtime, CrioRuntime)
    archive = tmp_path / "checkpoint.tar"
    with runtime.checkpoint("alice") as stream:
        archive.write_bytes(stream.read())
    kit.services.__dict__["runtime"] = runtime
    child_env = {**os.environ, "DRSVC_FAULT": f"{point}:kill"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(kit.root / "catalog.db"), str(archive)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, f"the restore was not killed at {point}: {done.stdout}{done.stderr}"


def test_a_checkpoint_image_left_by_a_killed_restore_is_deleted_by_cleanup(
    env: FakeEnv, kit: ColdKit, tmp_path: Path
) -> None:
    url = crio_url(env, tmp_path)
    restore_killed_at("after-checkpoint-pushed", env, kit, url, tmp_path)
    reg = env.registry
    ((repo, tag),) = reg.manifests  # the leak a kill -9 used to leave: the desktop's memory, in the registry
    assert reg.blobs
    (intent,) = leftovers(kit.catalog)
    assert intent.kind == "checkpoint-image" and intent.target == f"{reg.host}/{repo}:{tag}"
    lines = leftover_lines(kit.services)
    assert any("checkpoint-image" in line and "plaintext" in line for line in lines), lines

    dry = CleanupJob(kit.services, None).run(dry_run=True)
    assert [line for line in dry.undone if "checkpoint-image" in line] and reg.manifests

    report = CleanupJob(kit.services, None).run()
    assert not report.problems, report.problems
    assert reg.manifests == {} and reg.blobs == {}, "the checkpoint image and its blobs are gone"
    deleted = [path for method, path in reg.requests if method == "DELETE"]
    assert any("/manifests/sha256:" in path for path in deleted)
    assert leftovers(kit.catalog) == [] and CleanupJob(kit.services, None).run().nothing


def test_a_node_archive_left_by_a_killed_restore_is_deleted_by_cleanup(
    env: FakeEnv, kit: ColdKit, tmp_path: Path
) -> None:
    url = crio_url(env, tmp_path, restore_mode="archive", node="node-7")
    restore_killed_at("after-checkpoint-placed", env, kit, url, tmp_path)
    (placed,) = env.node_dir.glob("restore-*.tar")  # every memory page, left on the node
    (intent,) = leftovers(kit.catalog)
    assert (intent.kind, intent.target) == ("checkpoint-archive", str(placed))
    assert any("checkpoint-archive" in line for line in leftover_lines(kit.services))

    report = CleanupJob(kit.services, None).run()
    assert not report.problems, report.problems
    assert not placed.exists() and leftovers(kit.catalog) == []


def test_a_restore_that_ends_resolves_its_intent_and_one_that_cannot_delete_stays_listed(
    env: FakeEnv, kit: ColdKit, tmp_path: Path
) -> None:
    runtime = open_runtime(crio_url(env, tmp_path))
    kit.services.__dict__["runtime"] = runtime
    with runtime.checkpoint("alice") as stream:
        data = stream.read()
    with Owner(kit.catalog) as owner:
        with leaving(Intents(kit.catalog, owner.name), runtime, restore=1) as token:
            assert token and pending(kit.catalog, "checkpoint-image"), "recorded before the push"
            runtime.restore(io.BytesIO(data), name="alice-2", token=token)
        assert pending(kit.catalog) == [] and env.registry.manifests == {}

        env.registry.deletes = False  # a registry with deletes disabled keeps the image
        with leaving(Intents(kit.catalog, owner.name), runtime, restore=2) as token:
            runtime.restore(io.BytesIO(data), name="alice-3", token=token)
    assert env.registry.manifests
    (kept,) = leftovers(kit.catalog)  # its owner ended: listed until the image is really gone
    assert kept.kind == "checkpoint-image"
    assert any(kept.target in p for p in CleanupJob(kit.services, None).run().problems)
    env.registry.deletes = True
    CleanupJob(kit.services, None).run()
    assert env.registry.manifests == {} and leftovers(kit.catalog) == []


def test_forget_removes_only_what_a_restore_of_this_runtime_names(env: FakeEnv, tmp_path: Path) -> None:
    runtime = open_runtime(crio_url(env, tmp_path, restore_mode="archive", node="node-7"))
    assert isinstance(runtime, CrioRuntime)
    victim = tmp_path / "precious.tar"
    victim.write_text("x")
    for target in (str(victim), str(env.node_dir / "checkpoint-alice.tar"), str(env.node_dir / "../restore-ab.tar")):
        with pytest.raises(InvalidInput):
            runtime.forget("checkpoint-archive", target)
    assert victim.exists()
    assert runtime.forget("checkpoint-archive", str(env.node_dir / "restore-0123456789abcdef.tar")) == "undone"

    runtime = open_runtime(crio_url(env, tmp_path))
    assert isinstance(runtime, CrioRuntime)
    with pytest.raises(InvalidInput):
        runtime.forget("checkpoint-image", f"elsewhere.example/drsvc/checkpoints:restore-{'ab' * 8}")
    with pytest.raises(InvalidInput):
        runtime.forget("checkpoint-image", f"{env.registry.host}/drsvc/checkpoints:latest")
    # a manifest under a restore tag that is not a checkpoint image drsvc pushed is left alone
    reg = env.registry
    config = b"{}"
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    reg.blobs[digest] = config
    foreign = {"schemaVersion": 2, "config": {"digest": digest}, "layers": []}
    reg.manifests[("drsvc/checkpoints", f"restore-{'cd' * 8}")] = json.dumps(foreign).encode()
    with pytest.raises(BackendError, match="not a checkpoint image"):
        runtime.forget("checkpoint-image", f"{reg.host}/drsvc/checkpoints:restore-{'cd' * 8}")
    assert reg.manifests and reg.blobs
    assert runtime.forget("checkpoint-image", f"{reg.host}/drsvc/checkpoints:restore-{'ef' * 8}") == "undone"


class ImageRuntime:
    """A FAKE runtime holding loaded images and the containers that run from them (forget semantics only)."""

    url = "fake-images://"

    def __init__(self) -> None:
        self.images = {"sha256:" + "1" * 64}
        self.users: dict[str, str] = {}  # container -> image id

    def forget(self, kind: str, target: str) -> str:
        assert kind == "loaded-image"
        if target in self.users.values():
            return "kept"
        self.images.discard(target)
        return "undone"

    def close(self) -> None:
        pass


def test_cleanup_removes_a_loaded_image_unless_a_container_uses_it_or_a_live_restore_loads_it(
    kit: ColdKit,
) -> None:
    from test_intents import dead_owner

    runtime = ImageRuntime()
    kit.services.__dict__["runtime"] = runtime
    image = next(iter(runtime.images))
    gone = Intents(kit.catalog, dead_owner(kit))
    gone.record("loaded-image", image, restore=1, of="alice")
    with Owner(kit.catalog) as live:
        Intents(kit.catalog, live.name).record("loaded-image", image, restore=2, of="bob")
        report = CleanupJob(kit.services, None).run()
        assert image in runtime.images and any("same image" in p for p in report.problems)
    runtime.users["bob"] = image  # the live restore finished: its container runs from the image
    CleanupJob(kit.services, None).run()
    assert image in runtime.images
    states: Any = kit.catalog.query("SELECT state FROM intents WHERE kind = 'loaded-image' ORDER BY id")
    assert [r["state"] for r in states] == ["kept", "kept"]  # both restores' intents: bob's container uses it
    del runtime.users["bob"]
    gone.record("loaded-image", image, restore=3, of="carol")
    CleanupJob(kit.services, None).run()
    assert image not in runtime.images


def test_a_runtime_without_forget_has_nothing_to_forget() -> None:
    from drsvc.runtimes.base import forget, restore_artifact

    assert restore_artifact(object(), "ab" * 8) is None
    assert forget(object(), "loaded-image", "sha256:" + "1" * 64) == "undone"


@pytest.mark.parametrize(
    "target",
    ["../containers/bob", "sha256:../../containers/bob", "localhost/drsvc-desk:busybox", "bob", "sha256:ab12", ""],
)
def test_a_loaded_image_is_named_by_its_full_id_only(target: str) -> None:
    from drsvc.errors import InvalidInput
    from drsvc.runtimes.base import loaded_image_id

    with pytest.raises(InvalidInput, match="not a full image id"):
        loaded_image_id("docker:///run/docker.sock", target)
    full = "sha256:" + "ab" * 32
    assert loaded_image_id("docker://", full) == full and loaded_image_id("podman://", full[7:]) == full[7:]
