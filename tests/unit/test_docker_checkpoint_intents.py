"""A Docker backup's checkpoint directory, recorded before dockerd makes it and removed after a kill.

Docker keeps a checkpoint (every memory page of the desktop) in
``<DockerRootDir>/containers/<id>/checkpoints/<name>``; the adapter deletes it in a ``finally``,
which a kill -9 skips. The backup records a ``checkpoint-dir`` intent (owner: its lease) before
asking dockerd for the checkpoint; ``drsvc cleanup`` (and the next backup) removes exactly that
directory once the owner is gone, and nothing of a live backup or of any other checkpoint.

The Engine is a fake here (``_Engine``: a data root in a temp directory, the container documents
and ``create_checkpoint`` making the directory as dockerd does); the same code runs against the lab's
dockerd in tests/integration/test_docker_checkpoint_kill.py.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture)

from drsvc.catalog import Catalog
from drsvc.checkpoint_effects import RecordedCheckpoints
from drsvc.cleanup import CleanupJob, leftover_lines
from drsvc.errors import InvalidInput
from drsvc.intents import leftovers, pending
from drsvc.runtimes.docker.paths import checkpoint_dir, remove_backup_checkpoint
from drsvc.runtimes.docker.runtime import DockerRuntime

ALICE, BOB = "a" * 64, "b" * 64


class _Engine:
    """A fake Docker Engine client: running containers and the checkpoint directories it makes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[Path] = []

    def root_dir(self) -> Path:
        return self.root

    def inspect_raw(self, name: str) -> dict[str, Any]:
        cid = {"alice": ALICE, "bob": BOB}[name]
        upper = self.root / "overlay2" / cid / "diff"
        upper.mkdir(parents=True, exist_ok=True)
        return {
            "Id": cid,
            "Name": f"/{name}",
            "State": {"Status": "running"},
            "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": str(upper)}},
        }

    def create_checkpoint(self, cid: str, ckpt: str, what: str) -> None:
        path = checkpoint_dir(self.root, cid, ckpt)
        path.mkdir(parents=True)
        (path / "pages-1.img").write_bytes(b"secret memory")
        self.made.append(path)

    def delete_checkpoint(self, cid: str, ckpt: str) -> None:
        pass

    @contextmanager
    def errors(self, what: str, **_: Any) -> Iterator[None]:
        yield

    def close(self) -> None:
        pass


class _Api:
    def diff(self, cid: str) -> list[Any]:
        return []  # no root filesystem changes


def docker(root: Path) -> DockerRuntime:
    runtime = DockerRuntime.__new__(DockerRuntime)
    runtime.client = _Engine(root)  # type: ignore[assignment]
    runtime.socket_path = "/fake/docker.sock"
    runtime.client.api = _Api()  # type: ignore[attr-defined]
    return runtime


@pytest.fixture
def kit(tmp_path: Path, aws: None) -> Iterator[ColdKit]:  # noqa: F811
    kit = ColdKit(tmp_path / "kit")
    yield kit
    kit.catalog.close()


def killed_mid_checkpoint(kit: ColdKit, root: Path, name: str) -> Path:
    """A backup's checkpoint of ``name`` in a child process, SIGKILLed once its directory exists."""
    pid = os.fork()
    if pid == 0:  # the backup: its own catalog connection, owner lease and runtime
        try:
            catalog = Catalog.open(kit.catalog.path)
            with RecordedCheckpoints(catalog) as recorded:
                cm = recorded.checkpoint(docker(root), name)
                cm.__enter__()  # the archive would stream now
                os.kill(os.getpid(), signal.SIGKILL)
                cm.__exit__(None, None, None)  # never reached
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    (path,) = (root / "containers" / {"alice": ALICE, "bob": BOB}[name] / "checkpoints").iterdir()
    assert (path / "pages-1.img").is_file()
    return path


def test_a_checkpoint_directory_left_by_a_killed_backup_is_removed_by_cleanup(kit: ColdKit, tmp_path: Path) -> None:
    runtime = docker(tmp_path / "docker")
    kit.services.__dict__["runtime"] = runtime
    left = killed_mid_checkpoint(kit, tmp_path / "docker", "alice")
    # a live backup's checkpoint of another desktop, in progress (this process: its owner is alive)
    with RecordedCheckpoints(kit.catalog) as live, live.checkpoint(runtime, "bob"):
        (running,) = runtime.client.made  # type: ignore[attr-defined]
        # checkpoints drsvc never recorded: Docker's own, and another drsvc name on the same desktop
        foreign = checkpoint_dir(runtime.client.root_dir(), ALICE, "nightly")
        foreign.mkdir()
        other = checkpoint_dir(runtime.client.root_dir(), BOB, "drsvc-0123456789ab")
        other.mkdir()

        (intent,) = leftovers(kit.catalog)
        assert intent.kind == "checkpoint-dir" and intent.target == left.name
        assert intent.detail["container"] == "alice"
        lines = leftover_lines(kit.services)
        assert any("checkpoint-dir" in line and "plaintext" in line for line in lines), lines

        dry = CleanupJob(kit.services, None).run(dry_run=True)
        assert [line for line in dry.undone if "checkpoint-dir" in line] and left.exists()

        report = CleanupJob(kit.services, None).run()
        assert not report.problems, report.problems
        assert not left.exists(), "the killed backup's memory image is gone"
        assert running.exists() and foreign.exists() and other.exists()
        assert leftovers(kit.catalog) == [] and [i.target for i in pending(kit.catalog)] == [running.name]
    # the live backup ends normally: its intent resolved, its directory removed by the adapter
    assert not running.exists() and pending(kit.catalog) == []
    assert CleanupJob(kit.services, None).run().nothing


def test_a_backup_that_ends_resolves_its_intent(kit: ColdKit, tmp_path: Path) -> None:
    runtime = docker(tmp_path / "docker")
    with RecordedCheckpoints(kit.catalog) as recorded:
        with recorded.checkpoint(runtime, "alice") as stream:
            assert stream.read(1)  # the archive streams (the fake's checkpoint holds no config)
        assert recorded.owner is not None
    (made,) = runtime.client.made  # type: ignore[attr-defined]
    assert not made.exists() and pending(kit.catalog) == []
    rows = kit.catalog.query("SELECT kind, target, state FROM intents")
    assert [(r["kind"], r["target"], r["state"]) for r in rows] == [("checkpoint-dir", made.name, "done")]


def test_a_runtime_without_checkpoint_artifacts_records_nothing(kit: ColdKit) -> None:
    class Plain:
        @contextmanager
        def checkpoint(self, name: str) -> Iterator[bytes]:
            yield b"archive"

    with RecordedCheckpoints(kit.catalog) as recorded:
        with recorded.checkpoint(Plain(), "alice") as stream:  # type: ignore[arg-type]
            assert stream == b"archive"
        assert recorded.owner is None  # no owner lease for a runtime that leaves nothing
    assert kit.catalog.query("SELECT * FROM intents") == []


@pytest.mark.parametrize(
    "target", ["drsvc-../../etc", "../checkpoints", "nightly", "drsvc-0123456789AB", "drsvc-0123456789abc", ""]
)
def test_forget_removes_only_drsvc_names(tmp_path: Path, target: str) -> None:
    root = tmp_path / "docker"
    keep = checkpoint_dir(root, ALICE, "nightly")
    keep.mkdir(parents=True)
    with pytest.raises(InvalidInput):
        docker(root).forget("checkpoint-dir", target)
    assert keep.exists()


def test_forget_never_follows_a_link(tmp_path: Path) -> None:
    root = tmp_path / "docker"
    name = "drsvc-0123456789ab"
    outside = tmp_path / "outside"
    (outside / "checkpoints" / name).mkdir(parents=True)
    (outside / "checkpoints" / name / "keep").write_text("host data")
    (root / "containers").mkdir(parents=True)
    (root / "containers" / ALICE).symlink_to(outside)  # a container directory that is a link
    (root / "containers" / BOB / "checkpoints").mkdir(parents=True)
    (root / "containers" / BOB / "checkpoints" / name).symlink_to(outside / "checkpoints" / name)
    real = checkpoint_dir(root, "c" * 64, name)
    real.mkdir(parents=True)
    assert remove_backup_checkpoint(root, name) == 1
    assert not real.exists() and (outside / "checkpoints" / name / "keep").exists()
    assert os.path.islink(root / "containers" / BOB / "checkpoints" / name)
    assert docker(root).forget("checkpoint-dir", name) == "undone"  # gone already: idempotent
