"""How a restore's reads are arranged (moto S3 cold tier, FAKE runtime and volumes).

A packed stream's chunks are opened and re-hashed on the read worker that fetched their range (one
hand-over per range, not a future per chunk), and a bad chunk still stops the stream exactly where
it lies; the plan loads the cold index and lists the runtime's containers beside its store reads;
a chunk that lies wholly inside one volume object reaches the volume writer uncopied.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture, used through pytestmark)

import drsvc.chunks.reader as reader_module
from drsvc import clock
from drsvc.chunks import StreamRef, pack_key
from drsvc.chunks.index import PackDirectory
from drsvc.chunks.layout import INDEX_PREFIX
from drsvc.errors import EXIT_OK, IntegrityError
from drsvc.restore import RestoreJob, _split_objects
from drsvc.tiering import TierJob

pytestmark = pytest.mark.usefixtures("aws")

MiB = 1024 * 1024
T = TypeVar("T")
R = TypeVar("R")


def log_lines(size: int, seed: int) -> bytes:
    """Compressible text (so the cold tier packs it in frames)."""
    out = bytearray()
    n = seed
    while len(out) < size:
        n = (n * 1103515245 + 12345) % 2**31
        out += f"{n:010d} desktop session event {n % 97} ok\n".encode()
    return bytes(out[:size])


def tiered_point(kit: ColdKit) -> tuple[str, bytes, StreamRef]:
    kit.policy("std", ["alice"])
    data = os.urandom(MiB) + log_lines(3 * MiB, 1) + os.urandom(MiB // 2) + log_lines(2 * MiB, 2)
    objects = [data[i : i + MiB] for i in range(0, len(data), MiB)]
    pid = kit.point("alice", clock.now() - timedelta(hours=3), b"", objects=objects)
    assert TierJob(kit.services, None).run(now=clock.now()).exit_code == EXIT_OK
    ref = StreamRef.from_dict(kit.services.cold.get_manifest("alice", pid)["volume"]["stream"])
    return pid, data, ref


def test_chunks_are_verified_on_the_read_workers_one_hand_over_per_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = ColdKit(tmp_path)
    _, data, ref = tiered_point(kit)
    handed: list[str] = []
    real = reader_module.ordered_map

    def counting(fn: Callable[[T], R], items: Iterable[T], **kw: Any) -> Iterator[R]:
        def each() -> Iterator[T]:
            for item in items:
                handed.append(type(item).__name__)
                yield item

        return real(fn, each(), **kw)

    monkeypatch.setattr(reader_module, "ordered_map", counting)
    cold = kit.fresh_services().cold
    assert b"".join(cold.read_stream(ref)) == data
    # 7.5 MiB cut with a fresh random key: 38-62 chunks seen; enough that a quarter means something
    assert len(ref.chunks) >= 16
    # every chunk verified all the same (a wrong one fails: see the next test), but the consumer's
    # thread hands over ranges only: before, each of the stream's chunks was a future of its own
    assert handed and set(handed) == {"Range"}, handed[:5]
    assert len(handed) < len(ref.chunks) // 4
    kit.close()


def test_a_bad_frame_stops_the_stream_exactly_before_its_first_chunk(tmp_path: Path) -> None:
    kit = ColdKit(tmp_path)
    _, data, ref = tiered_point(kit)
    cold = kit.services.cold
    [index] = cold.refresh_packs().values()
    entries = {e.cid: e for e in index.entries}
    victim = next(e for e in index.entries if e.in_frame and e.offset != min(x.offset for x in index.entries))
    blob = bytearray(cold.store.get(pack_key(index.pack_id)))
    blob[victim.offset + victim.length // 2] ^= 0x10
    cold.store.put(pack_key(index.pack_id), bytes(blob))
    # the stream's bytes before the first chunk of the damaged frame are good and come out; none after
    good = 0
    for cid, size in ref.chunks:
        if entries[cid].offset == victim.offset:
            break
        good += size
    assert 0 < good < len(data)
    out = bytearray()
    with pytest.raises(IntegrityError, match=f"pack {index.pack_id} at offset {victim.offset}"):
        for piece in kit.fresh_services().cold.read_stream(ref):
            out += piece
    assert bytes(out) == data[:good]
    kit.close()


def test_concurrent_first_loads_of_the_index_list_it_once(tmp_path: Path) -> None:
    kit = ColdKit(tmp_path)
    tiered_point(kit)
    store = kit.fresh_services().cold.store
    listings: list[str] = []

    class Slow:
        """The cold store, its index listing slowed down so two loads would overlap."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def list(self, prefix: str = "") -> Iterator[str]:
            if prefix == INDEX_PREFIX:
                listings.append(prefix)
                time.sleep(0.3)
            return store.list(prefix)

    cold = kit.services.cold
    directory = PackDirectory(Slow(), cold.keyring.codec_of, cold.params.max_size)  # type: ignore[arg-type]
    threads = [threading.Thread(target=directory.ensure_loaded) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert listings == [INDEX_PREFIX], "the second caller waits for the first load instead of doing it again"
    assert directory.where
    kit.close()


def test_a_cold_plan_loads_the_index_and_lists_containers_beside_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = ColdKit(tmp_path)
    pid, _, _ = tiered_point(kit)
    services = kit.fresh_services()
    cold, runtime = services.cold, services.runtime
    listing_started = threading.Event()
    real_list, real_manifest = runtime.list_desktops, cold.get_manifest

    def list_desktops() -> Any:
        listing_started.set()
        return real_list()

    def get_manifest(*args: Any, **kw: Any) -> Any:
        # the runtime's listing runs beside this read: it has started without waiting for it
        assert listing_started.wait(10), "the containers were not listed beside the manifest read"
        return real_manifest(*args, **kw)

    monkeypatch.setattr(runtime, "list_desktops", list_desktops)
    monkeypatch.setattr(cold, "get_manifest", get_manifest)
    assert not cold.packs._loaded
    plan = RestoreJob(services).plan("alice", point_id=pid, tier="cold", as_name="alice-pipeline")
    assert plan.tier == "cold" and plan.target.empty
    deadline = time.monotonic() + 30  # a liveness bound, not a speed assertion
    while not cold.packs._loaded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cold.packs._loaded, "the plan started loading the cold index for the volume phase"
    kit.close()


def test_whole_chunks_reach_the_volume_writer_uncopied() -> None:
    chunks = [b"a" * 10, b"b" * 6, b"c" * 4, b"d" * 10]
    objects = [
        {"name": "one", "size": 16, "xattrs": {}, "omap": {}},  # chunks a, b
        {"name": "two", "size": 7, "xattrs": {}, "omap": {}},  # chunk c, 3 bytes of d
        {"name": "three", "size": 7, "xattrs": {}, "omap": {}},  # the rest of d
    ]
    out = [(obj.name, list(pieces)) for obj, pieces in _split_objects(objects, iter(chunks))]
    assert [(n, b"".join(p)) for n, p in out] == [
        ("one", b"a" * 10 + b"b" * 6),
        ("two", b"cccc" + b"ddd"),
        ("three", b"d" * 7),
    ]
    assert out[0][1][0] is chunks[0] and out[0][1][1] is chunks[1] and out[1][1][0] is chunks[2]
    one_more = [*objects, {"name": "four", "size": 1, "xattrs": {}, "omap": {}}]
    with pytest.raises(IntegrityError, match="ended before its last object"):
        [list(pieces) for _, pieces in _split_objects(one_more, iter(chunks))]
