"""BackupJob under the freeze budget, without the lab: a snapshot that stalls fails the batch, loudly.

The runtime is test_freeze_budget's HookRuntime (the real freeze hook, a fake CRIU); the pool
snapshots and volumes are fakes (named so); the hot store and the catalog are real (file://).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture)
from test_freeze_budget import IDS, HookRuntime, RedumpRuntime

from drsvc import backup as backup_mod
from drsvc.backup import BackupJob, SnapshotReads
from drsvc.backup_commit import Committer, EarlyParents
from drsvc.lease import Lease
from drsvc.runtimes.base import DesktopRef
from drsvc.volumes.base import VolumeObject


class FakeSnapshots:
    """Pool snapshots that can stall (a stopped OSD) until released."""

    def __init__(self, stall: threading.Event | None) -> None:
        self.stall = stall
        self.created: list[str] = []
        self.removed: list[str] = []

    def create(self, name: str) -> int:
        if self.stall is not None:
            self.stall.wait(30)
        self.created.append(name)
        return 1

    def remove(self, name: str) -> None:
        self.removed.append(name)


class FakeVolume:
    scope = "rados://pool"

    def objects_at(self, snap: str) -> list[VolumeObject]:
        return [VolumeObject("data", 5)]

    def read_objects_at(
        self, snap: str, objects: list[VolumeObject] | None = None
    ) -> Iterator[tuple[VolumeObject, Iterator[bytes]]]:
        yield VolumeObject("data", 5), iter([b"hello"])


@pytest.fixture
def kit(tmp_path: Path, aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[ColdKit]:  # noqa: F811
    monkeypatch.setenv("DRSVC_FREEZE_ROOT", str(tmp_path / "freeze"))
    monkeypatch.setattr(backup_mod, "hook_installed", lambda: True)
    kit = ColdKit(tmp_path)
    kit.policy("quick", ["desk-a", "desk-b"], capture={"freeze_timeout": "2s"})
    runtime = HookRuntime(tmp_path)
    runtime.url = "fake://hook"  # type: ignore[attr-defined]
    runtime.save_image = None  # type: ignore[attr-defined]
    runtime.stores_images = False  # type: ignore[attr-defined]
    kit.services.__dict__["runtime"] = runtime
    kit.services.volume = lambda url: FakeVolume()  # type: ignore[method-assign]
    for d in ("desk-a", "desk-b"):
        kit.catalog.upsert_desktop(
            {"id": d, "runtime_url": "fake://hook", "container": d, "volume": f"rados://pool/{d}", "labels": {}}
        )
    yield kit
    kit.catalog.close()


def pipelined(kit: ColdKit) -> None:
    """``[scheduler] pipeline = true`` (the config is frozen: a changed copy)."""
    config = kit.services.config
    scheduler = config.scheduler.model_copy(update={"pipeline": True})
    kit.services.config = config.model_copy(update={"scheduler": scheduler})


def refs() -> list[DesktopRef]:
    return [DesktopRef(n, n, IDS[n], f"rados://pool/{n}", None) for n in ("desk-a", "desk-b")]


def run(kit: ColdKit, snaps: FakeSnapshots) -> Any:
    kit.services.snapshots = lambda scope: snaps  # type: ignore[method-assign]
    with Lease(kit.catalog) as lease:
        return BackupJob(kit.services, lease).run(refs(), kit.services.policies.get("quick"))


def test_a_quick_snapshot_gives_paired_points_with_budget_and_freeze(kit: ColdKit) -> None:
    report = run(kit, FakeSnapshots(None))
    assert report.exit_code == 0
    for o in report.outcomes:
        assert (o.status, o.consistency) == ("complete", "paired"), o
        point = kit.catalog.point(o.point_id)
        assert point["freeze_budget_ms"] == 2000 and 0 < point["freeze_ms"] <= 2000


def test_a_desktop_dumped_again_after_the_snapshot_keeps_its_volume_not_its_memory(
    kit: ColdKit, tmp_path: Path
) -> None:
    """A retried checkpoint (Docker's, moby#42900) dumps desk-b again after the batch's pool
    snapshot: its point is crash-consistent and says why; desk-a's stays paired."""
    runtime = RedumpRuntime(tmp_path, redump={"desk-b"})
    for attr in ("url", "save_image", "stores_images"):
        setattr(runtime, attr, getattr(kit.services.runtime, attr))
    kit.services.__dict__["runtime"] = runtime
    report = run(kit, FakeSnapshots(None))
    by_desktop = {o.desktop: o for o in report.outcomes}
    assert by_desktop["desk-a"].consistency == "paired", by_desktop["desk-a"]
    b = by_desktop["desk-b"]
    assert b.status == "complete" and b.consistency == "crash", b
    assert "dumped it again after its batch's pool snapshot" in (b.reason or "")


def test_a_stalled_snapshot_fails_the_batch_within_the_budget_and_is_removed(kit: ColdKit) -> None:
    stall = threading.Event()
    snaps = FakeSnapshots(stall)
    threading.Timer(4.0, stall.set).start()  # "the OSD comes back" after the budget
    started = time.monotonic()
    report = run(kit, snaps)
    assert report.exit_code == 1, report.document()
    for o in report.outcomes:
        assert o.status == "failed" and "freeze budget of 2 s" in (o.error or ""), o
        assert o.freeze_ms is not None and o.freeze_ms <= 2000, o
        point = kit.catalog.point(o.point_id)
        assert (point["status"], point["consistency"]) == ("failed", "crash")
    # the snapshot that completed late is removed again, and the catalog says so
    assert snaps.created == snaps.removed and len(snaps.removed) == 1
    [row] = kit.catalog.query("SELECT name, removed_at FROM pool_snapshots")
    assert row["name"] == snaps.removed[0] and row["removed_at"] is not None
    assert time.monotonic() - started < 25


def test_the_next_batch_freezes_while_the_last_one_is_stored(kit: ColdKit) -> None:
    """Batches are pipelined: desk-b's batch takes its checkpoint and pool snapshot while desk-a's
    volume is still being read; both points stay paired within their freeze budget."""
    kit.policy("quick", ["desk-a", "desk-b"], capture={"freeze_timeout": "2s", "freeze_batch": 1})
    pipelined(kit)
    second = threading.Event()
    seen: dict[str, bool] = {}
    nice = {"run": os.getpriority(os.PRIO_PROCESS, 0)}

    class Snaps(FakeSnapshots):
        def create(self, name: str) -> int:
            super().create(name)
            if len(self.created) == 2:
                second.set()
            return 1

    class SlowVolume(FakeVolume):
        def __init__(self, url: str) -> None:
            self.url = url

        def read_objects_at(
            self, snap: str, objects: list[VolumeObject] | None = None
        ) -> Iterator[tuple[VolumeObject, Iterator[bytes]]]:
            if self.url.endswith("desk-a"):  # the first batch: still storing when the second freezes?
                seen["second snapshot while desk-a was stored"] = second.wait(10)
                nice["store"] = os.getpriority(os.PRIO_PROCESS, 0)  # per thread on Linux
            yield from super().read_objects_at(snap, objects)

    kit.services.volume = SlowVolume  # type: ignore[method-assign,assignment]
    report = run(kit, Snaps(None))
    assert seen == {"second snapshot while desk-a was stored": True}
    # stores give way to the checkpoints they overlap: CRIU dumps while desktops stand frozen
    assert nice["store"] == min(19, nice["run"] + backup_mod.STORE_NICE)
    assert os.getpriority(os.PRIO_PROCESS, 0) == nice["run"]
    assert report.exit_code == 0 and len(report.pool_snapshots) == 2
    for o in report.outcomes:
        assert (o.status, o.consistency) == ("complete", "paired"), o
        assert o.freeze_ms is not None and o.freeze_ms <= 2000
    assert [o.desktop for o in report.outcomes] == ["desk-a", "desk-b"]
    assert set(report.document()["phases"]) >= {"freeze", "store", "volume", "commit"}


def test_a_store_never_calls_the_runtime_while_the_next_batch_is_checkpointed(kit: ColdKit) -> None:
    """Pipelined batches keep the freeze rule: drsvc never calls the runtime while a checkpoint is
    held. desk-a's base image is saved by its store thread only once desk-b's checkpoint is over."""
    import contextlib
    import io

    from drsvc.runtimes.base import DesktopRef as Ref

    kit.policy("quick", ["desk-a", "desk-b"], capture={"freeze_timeout": "2s", "freeze_batch": 1})
    pipelined(kit)
    runtime = kit.services.runtime
    checkpointing: list[str] = []
    saved_during: list[list[str]] = []
    plain = runtime.checkpoint

    @contextlib.contextmanager
    def checkpoint(container: str) -> Iterator[Any]:
        checkpointing.append(container)
        try:
            if container == "desk-b":  # desk-b's checkpoint takes a while: desk-a is storing meanwhile
                time.sleep(1.0)
            with plain(container) as stream:
                yield stream
        finally:
            checkpointing.remove(container)

    @contextlib.contextmanager
    def save_image(_image: str) -> Iterator[Any]:
        saved_during.append(list(checkpointing))
        yield io.BytesIO(b"image tar")

    runtime.checkpoint = checkpoint
    runtime.save_image = save_image
    runtime.stores_images = True
    desktops = [
        Ref(n, n, IDS[n], f"rados://pool/{n}", None, image="busybox", image_id="sha256:" + "c" * 64) for n in IDS
    ]
    kit.services.snapshots = lambda scope: FakeSnapshots(None)  # type: ignore[method-assign]
    with Lease(kit.catalog) as lease:
        report = BackupJob(kit.services, lease).run(desktops, kit.services.policies.get("quick"))
    assert report.exit_code == 0, report.document()
    assert saved_during and all(during == [] for during in saved_during), saved_during
    reasons = [(o.desktop, o.reason) for o in report.outcomes]
    assert all((o.status, o.consistency) == ("complete", "paired") for o in report.outcomes), reasons


def test_without_pipeline_each_batch_is_stored_before_the_next_freezes(kit: ColdKit) -> None:
    """The default: no store runs while a later batch is checkpointed."""
    kit.policy("quick", ["desk-a", "desk-b"], capture={"freeze_timeout": "2s", "freeze_batch": 1})
    assert kit.services.config.scheduler.pipeline is False
    snaps = FakeSnapshots(None)
    stored_after: list[int] = []

    class Counting(FakeVolume):
        def read_objects_at(
            self, snap: str, objects: list[VolumeObject] | None = None
        ) -> Iterator[tuple[VolumeObject, Iterator[bytes]]]:
            time.sleep(0.3)  # a slow store: the next batch would freeze meanwhile if pipelined
            stored_after.append(len(snaps.created))
            yield from super().read_objects_at(snap, objects)

    kit.services.volume = lambda url: Counting()  # type: ignore[method-assign]
    report = run(kit, snaps)
    assert report.exit_code == 0 and stored_after == [1, 2]


@pytest.mark.parametrize("pipeline", [False, True])
def test_store_threads_give_way_only_when_batches_are_pipelined(
    kit: ColdKit, monkeypatch: pytest.MonkeyPatch, pipeline: bool
) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if base + backup_mod.STORE_NICE > 19:
        pytest.skip(f"this process already runs at nice {base}: no room to see the store threads' nice")
    seen: list[int] = []
    real = Committer.store

    def store(self: Committer, task: Any) -> None:
        seen.append(os.getpriority(os.PRIO_PROCESS, 0))  # the calling (store) thread's nice on Linux
        real(self, task)

    monkeypatch.setattr(Committer, "store", store)
    if pipeline:
        pipelined(kit)
    report = run(kit, FakeSnapshots(None))
    assert report.exit_code == 0, report.document()
    assert seen == [base + backup_mod.STORE_NICE if pipeline else base] * 2
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the run's own thread never gave way


class ListingSnapshots(FakeSnapshots):
    """Pool snapshots that can list the pool by volume (as RADOS pools can), noting when they did."""

    def __init__(self) -> None:
        super().__init__(None)
        self.listed = threading.Event()
        self.thread = ""

    def names_by_volume(self, urls: list[str]) -> dict[str, list[str]]:
        assert self.created, "listed before the snapshot was taken"
        self.thread = threading.current_thread().name
        self.listed.set()
        return {url: ["data"] for url in urls}


def test_the_pool_is_listed_while_the_archives_still_stream(kit: ColdKit, monkeypatch: pytest.MonkeyPatch) -> None:
    snaps = ListingSnapshots()
    seen: list[bool] = []
    real = backup_mod.checkpoint_batch

    def checkpoint_batch(runtime: Any, desktops: Any, consume: Any, **kw: Any) -> Any:
        def consuming(d: DesktopRef, stream: Any) -> Any:
            seen.append(snaps.listed.wait(10))  # the snapshot is taken (and listed) before archives stream
            return consume(d, stream)

        return real(runtime, desktops, consuming, **kw)

    monkeypatch.setattr(backup_mod, "checkpoint_batch", checkpoint_batch)
    report = run(kit, snaps)
    assert report.exit_code == 0, report.document()
    assert seen == [True, True]
    assert snaps.thread.startswith("listing")


class VersionedFake:
    """A volume that tells object versions (a fake of a RADOS namespace), noting each stamps_at."""

    scope = "rados://pool"

    def __init__(self, url: str, listed: threading.Event) -> None:
        self.url = url
        self.listed = listed
        self.stats: list[tuple[list[str] | None, str, bool]] = []  # names, thread, the listing was done

    def stamp_scope(self) -> str:
        return "fake:pool"

    def stamps_at(self, snap: str, names: list[str] | None = None) -> list[VolumeObject]:
        self.stats.append((names, threading.current_thread().name, self.listed.is_set()))
        return [VolumeObject("data", 5, version=1)]

    def objects_at(self, snap: str, names: list[str] | None = None) -> list[VolumeObject]:
        return [VolumeObject("data", 5, version=1)]

    def read_objects_at(
        self, snap: str, objects: list[VolumeObject] | None = None
    ) -> Iterator[tuple[VolumeObject, Iterator[bytes]]]:
        yield VolumeObject("data", 5, version=1), iter([b"hello"])


class SlowListing(ListingSnapshots):
    """A listing that ends only once every desktop's objects were stat'ed (or after 10 s)."""

    def __init__(self, volumes: dict[str, VersionedFake], done: threading.Event) -> None:
        super().__init__()
        self.volumes = volumes
        self.done = done

    def names_by_volume(self, urls: list[str]) -> dict[str, list[str]]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(v.stats for v in self.volumes.values()):
            time.sleep(0.01)
        names = super().names_by_volume(urls)
        self.done.set()
        return names


def test_an_unchanged_desktop_is_stat_ed_while_its_batch_listing_runs(kit: ColdKit) -> None:
    """The parent point's objects are stat'ed at the snapshot beside the pool listing (which scans the
    whole pool), not after it; the capture then stats nothing again and builds on the parent."""
    listed = threading.Event()
    volumes = {f"rados://pool/{d}": VersionedFake(f"rados://pool/{d}", listed) for d in ("desk-a", "desk-b")}
    kit.services.volume = lambda url: volumes[url]  # type: ignore[method-assign]
    assert run(kit, FakeSnapshots(None)).exit_code == 0  # the parents: full reads
    for v in volumes.values():
        v.stats.clear()
    report = run(kit, SlowListing(volumes, listed))
    assert report.exit_code == 0, report.document()
    for v in volumes.values():
        # once, with the parent's names, on a side thread, before the listing ended
        assert v.stats == [(["data"], v.stats[0][1], False)] and v.stats[0][1].startswith("listing")
    for o in report.outcomes:
        manifest = kit.services.hot.get_manifest(o.desktop, o.point_id)
        assert manifest["volume"]["capture"]["mode"] == "incremental", manifest["volume"]["capture"]


def test_parent_manifests_are_read_once_the_dumps_began(kit: ColdKit, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parents are looked up (a big manifest's parse holds the GIL) only once a desktop of the
    batch is dumping, so they never delay the checkpoints' start."""
    root = Path(os.environ["DRSVC_FREEZE_ROOT"])
    seen: list[bool] = []
    real = EarlyParents.start

    def start(self: EarlyParents, desktop: str, executor: Any) -> None:
        seen.append(root.is_dir() and any((d / "pre-dump").exists() for d in root.iterdir()))
        real(self, desktop, executor)

    monkeypatch.setattr(EarlyParents, "start", start)
    report = run(kit, FakeSnapshots(None))
    assert report.exit_code == 0, report.document()
    assert seen == [True, True]


def test_a_batch_lists_its_pool_once_whether_or_not_the_snapshot_callback_started_it() -> None:
    """``SnapshotReads.listing`` is the future ``start`` submitted; without ``start``, one submitted
    on the first call and handed out again (never one listing per desktop)."""
    import concurrent.futures as cf

    calls: list[str] = []
    batch = [DesktopRef(f"d{i}", f"c{i}", f"id{i}", f"rados://p/d{i}", None) for i in range(3)]

    def list_pool() -> dict[str, list[str]]:
        calls.append("list")
        return {"rados://p/d0": ["a"]}

    def stamp_ahead(d: DesktopRef, snap: str) -> dict[str, VolumeObject]:
        return {d.desktop_id: VolumeObject(snap, 1)}

    with cf.ThreadPoolExecutor(2) as side:
        started = SnapshotReads(side, list_pool, stamp_ahead, batch, "s1")
        started.start()
        first = started.listing()
        assert [started.listing() for _ in batch] == [first] * 3
        assert first.result() == {"rados://p/d0": ["a"]}
        assert {k: f.result() for k, f in started.stamped.items()} == {
            d.desktop_id: {d.desktop_id: VolumeObject("s1", 1)} for d in batch
        }
        late = SnapshotReads(side, list_pool, stamp_ahead, batch, "s2")
        listings = [late.listing() for _ in batch]
        assert listings == [listings[0]] * 3 and late.stamped == {}
        listings[0].result()
    assert calls == ["list", "list"]
