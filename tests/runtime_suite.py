"""The behaviour every ``ContainerRuntime`` backend must show (one suite, every runtime).

Subclass ``RuntimeSuite`` and provide three fixtures:

- ``runtime``: an open ``ContainerRuntime``;
- ``make_desktop``: ``make_desktop(n) -> [container name, ...]`` of running, labelled desktops whose
  workload keeps an in-memory counter and writes ``"<count> <boot id>"`` to ``/data/counter``
  every 0.2 s, in place and at a fixed width (the lab's busybox desktop); the fixture removes
  them (and clones named ``<name>-…``) afterwards;
- ``scratch_image``: ``(reference, drop)``: a throwaway tagged copy of the desktop image that
  the test may save, untag (``drop(reference)``) and load again.

    class TestPodmanRuntime(RuntimeSuite):
        @pytest.fixture
        def runtime(self, lab): ...

Container tests are slow-ish (a checkpoint is ~0.3 s, a restore ~0.3 s): keep them serial.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from drsvc.errors import DrsvcError, NotFound
from drsvc.runtimes import ContainerRuntime, DesktopRef
from drsvc.runtimes.freeze import checkpoint_batch

MakeDesktop = Callable[[int], list[str]]


def read_counter(runtime: ContainerRuntime, name: str, tries: int = 20) -> tuple[int, str]:
    """(count, boot id) from the desktop's /data/counter (retried: a read can meet a write)."""
    last = ""
    for _ in range(tries):
        code, out = runtime.exec(name, ["cat", "/data/counter"], timeout=20)
        last = out
        parts = out.split()
        if code == 0 and len(parts) == 2 and parts[0].isdigit() and len(parts[1]) >= 32:
            return int(parts[0]), parts[1]
        time.sleep(0.05)
    raise AssertionError(f"{name}: unreadable counter {last!r}")


def wait_counter_above(runtime: ContainerRuntime, name: str, count: int, timeout: float = 15) -> tuple[int, str]:
    """The desktop's (count, boot) once it counted past ``count``; fails loudly if it does not.

    It used to return the last value quietly at the deadline, so a desktop that never resumed
    reached the caller's next assertion, which then tested something else.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = read_counter(runtime, name)
        if value[0] > count:
            return value
        assert time.monotonic() < deadline, f"{name}: counter stuck at {value[0]} (<= {count}) for {timeout:g} s"
        time.sleep(0.1)


def start_growing(runtime: ContainerRuntime, name: str, path: str) -> None:
    """Start a process in the desktop that grows ``path`` without pause through a descriptor opened
    for writing, not appending (a journal): its size changes at every instant. Returns once it grew."""
    writer = f"(exec 3>{path}; while true; do echo entry >&3; done) </dev/null >/dev/null 2>&1 &"
    assert runtime.exec(name, ["sh", "-c", writer])[0] == 0
    deadline = time.monotonic() + 10
    while runtime.exec(name, ["test", "-s", path])[0] != 0:
        assert time.monotonic() < deadline, f"{name}: the writer of {path} did not start"
        time.sleep(0.05)


class RuntimeSuite:
    def clone_name(self, name: str, suffix: str) -> str:
        """The ``name=`` that restores a clone of desktop container ``name`` beside it."""
        return f"{name}-{suffix}"

    def test_is_a_container_runtime(self, runtime: ContainerRuntime) -> None:
        assert isinstance(runtime, ContainerRuntime)
        assert "://" in runtime.url

    def test_health_reports_versions(self, runtime: ContainerRuntime) -> None:
        h = runtime.health()
        assert h.get("version")
        assert "freeze_hook_installed" in h and "criu_version" in h

    def test_discover_parses_labels(self, runtime: ContainerRuntime, make_desktop: MakeDesktop) -> None:
        (name,) = make_desktop(1)
        found = {d.container: d for d in runtime.list_desktops()}
        assert name in found
        d = found[name]
        assert isinstance(d, DesktopRef)
        assert d.desktop_id == d.labels["drsvc.desktop"] == name
        assert d.volume == d.labels["drsvc.volume"] and d.volume
        assert d.tenant == d.labels["drsvc.tenant"] and d.tenant
        assert len(d.container_id) == 64 and d.state == "running" and d.image_id
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

    def test_missing_containers(self, runtime: ContainerRuntime) -> None:
        with pytest.raises(NotFound):
            runtime.inspect("drsvc-suite-no-such-container")
        with pytest.raises(NotFound), runtime.checkpoint("drsvc-suite-no-such-container"):
            pass
        with pytest.raises(NotFound):
            runtime.pause("drsvc-suite-no-such-container")
        runtime.remove("drsvc-suite-no-such-container")  # missing is fine

    def test_exec(self, runtime: ContainerRuntime, make_desktop: MakeDesktop) -> None:
        (name,) = make_desktop(1)
        code, out = runtime.exec(name, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert code == 3
        assert "out" in out and "err" in out
        assert runtime.exec(name, ["true"]) == (0, "")

    def test_pause_unpause(self, runtime: ContainerRuntime, make_desktop: MakeDesktop) -> None:
        (name,) = make_desktop(1)
        runtime.pause(name)
        try:
            assert runtime.inspect(name).state == "paused"
        finally:
            runtime.unpause(name)
        assert runtime.inspect(name).state == "running"

    def test_checkpoint_remove_restore_same_name(
        self, runtime: ContainerRuntime, make_desktop: MakeDesktop, tmp_path: Path
    ) -> None:
        (name,) = make_desktop(1)
        before = wait_counter_above(runtime, name, 0)
        ref = runtime.inspect(name)
        archive = tmp_path / "ckpt.tar"
        with runtime.checkpoint(name) as stream, archive.open("wb") as f:
            while chunk := stream.read(1 << 20):
                f.write(chunk)
        assert archive.stat().st_size > 10_000
        assert runtime.inspect(name).state == "running"  # left running
        runtime.remove(name)
        with pytest.raises(NotFound):
            runtime.inspect(name)
        with archive.open("rb") as f:
            restored = runtime.restore(f, size=archive.stat().st_size)
        assert restored.container == name and restored.state == "running"
        assert (restored.desktop_id, restored.volume, restored.tenant) == (
            ref.desktop_id,
            ref.volume,
            ref.tenant,
        )
        count, boot = wait_counter_above(runtime, name, before[0])
        assert boot == before[1], "a restore must continue the same process, not restart it"
        assert count > before[0]

    def test_restore_clone_beside_original(self, runtime: ContainerRuntime, make_desktop: MakeDesktop) -> None:
        (name,) = make_desktop(1)
        before = wait_counter_above(runtime, name, 0)
        clone = f"{name}-clone"
        # checkpoint stream piped straight into the restore: nothing spooled in between
        with runtime.checkpoint(name) as stream:
            ref = runtime.restore(stream, name=clone)
        try:
            assert ref.container == clone and ref.state == "running"
            assert runtime.inspect(name).state == "running"
            assert ref.container_id != runtime.inspect(name).container_id
            count, boot = wait_counter_above(runtime, clone, before[0])
            assert boot == before[1] and count > before[0]
            orig = wait_counter_above(runtime, name, count)
            assert orig[1] == before[1]
        finally:
            runtime.remove(clone)

    def test_restore_clone_without_network(
        self, runtime: ContainerRuntime, make_desktop: MakeDesktop, tmp_path: Path
    ) -> None:
        (name,) = make_desktop(1)
        before = wait_counter_above(runtime, name, 0)
        clone = f"{name}-sandbox"
        with runtime.checkpoint(name) as stream:
            ref = runtime.restore(stream, name=clone, network="none")
        try:
            assert ref.network == "none" and ref.state == "running"
            _, boot = wait_counter_above(runtime, clone, before[0])
            assert boot == before[1]
            code, out = runtime.exec(clone, ["cat", "/proc/net/dev"])
            ifaces = {line.split(":")[0].strip() for line in out.splitlines()[2:] if ":" in line}
            assert code == 0 and ifaces == {"lo"}, out
            assert runtime.inspect(name).network not in (None, "none")
        finally:
            runtime.remove(clone)

    def test_back_to_back_checkpoints_and_restores(self, runtime: ContainerRuntime, make_desktop: MakeDesktop) -> None:
        # a retried job or a drill right after a backup: each checkpoint and each restore follows
        # the previous one at once (dockerd's containerd still holds the last one's blobs then)
        (name,) = make_desktop(1)
        before = wait_counter_above(runtime, name, 0)
        for round_ in range(6):
            clone = self.clone_name(name, f"again{round_}")
            with runtime.checkpoint(name) as stream:
                ref = runtime.restore(stream, name=clone)
            try:
                assert ref.state == "running", f"round {round_}"
                assert wait_counter_above(runtime, ref.container, before[0])[1] == before[1]
            finally:
                runtime.remove(clone)
        assert runtime.inspect(name).state == "running"

    def test_a_file_resized_right_after_the_dump_comes_back_as_it_stood(
        self, runtime: ContainerRuntime, make_desktop: MakeDesktop
    ) -> None:
        """drsvc's checkpoints copy the root filesystem files a desktop holds open inside the freeze.

        A writer grows ``/tmp/held`` without pause through a descriptor opened for writing (not
        appending): the runtime's own export of the root filesystem, read after CRIU resumed the
        desktop, always finds it bigger than CRIU recorded, and CRIU refuses such a restore
        (test_runtime_podman shows it). Through ``checkpoint_batch`` every round restores.
        """
        (name,) = make_desktop(1)
        start_growing(runtime, name, "/tmp/held")
        ref = runtime.inspect(name)
        for round_ in range(3):
            for attempt in range(4):
                clone = self.clone_name(name, f"held{round_}{attempt}")
                result = checkpoint_batch(runtime, [ref], lambda _d, stream, c=clone: runtime.restore(stream, name=c))
                r = result[ref.container_id]
                if not r.redumped:
                    break
                # Docker dumped it again after the release (containerd still held the previous
                # checkpoint's blobs, moby#42900): drsvc calls that archive unpaired and applies no
                # held files (test_freeze_budget, test_backup_budget). Let containerd's collector run.
                runtime.remove(clone)
                time.sleep(2)
            try:
                assert not r.redumped, f"round {round_}: dumped again after the release in 4 attempts"
                assert r.error is None, f"round {round_}: {r.error}"
                assert r.frozen and r.value is not None and r.value.state == "running"
                assert r.held["notes"] == [], r.held
                [held] = [f for f in r.held["files"] if f["path"] == "tmp/held"]
                assert held["size"] > 0
                # the clone's writer goes on from the dump: never below what was copied
                code, out = runtime.exec(r.value.container, ["sh", "-c", "wc -c </tmp/held"])
                assert code == 0 and int(out) >= held["size"], (out, held)
            finally:
                runtime.remove(clone)

    def test_image_round_trip(
        self, runtime: ContainerRuntime, scratch_image: tuple[str, Callable[[str], None]], tmp_path: Path
    ) -> None:
        ref, drop = scratch_image
        assert runtime.image_exists(ref)
        assert not runtime.image_exists(ref + "-no-such-tag")
        saved = tmp_path / "image.tar"
        with runtime.save_image(ref) as stream, saved.open("wb") as f:
            while chunk := stream.read(1 << 20):
                f.write(chunk)
        assert saved.stat().st_size > 1000
        drop(ref)
        assert not runtime.image_exists(ref)
        with saved.open("rb") as f:
            names = runtime.load_image(f)
        assert names
        assert runtime.image_exists(ref)
        with pytest.raises(NotFound), runtime.save_image(ref + "-no-such-tag"):
            pass
        with pytest.raises(DrsvcError):  # garbage is not an image
            runtime.load_image(io.BytesIO(b"not a tar"))
