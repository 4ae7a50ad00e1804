"""``ordered_map``: results in input order; ``inline`` items done in the caller's thread."""

from __future__ import annotations

import threading

import pytest

from drsvc.storage.base import ordered_map


def where(item: int) -> tuple[int, str]:
    if item == 13:
        raise ValueError("thirteen")
    return item, threading.current_thread().name


def test_inline_items_stay_in_the_callers_thread_and_in_order() -> None:
    me = threading.current_thread().name
    items = [i for i in range(40) if i != 13]
    out = list(ordered_map(where, items, workers=3, window=5, inline=lambda i: i % 2 == 0))
    assert [i for i, _ in out] == items
    assert all(name == me for i, name in out if i % 2 == 0)
    assert all(name != me for i, name in out if i % 2)


def test_an_inline_item_that_raises_surfaces_at_its_place() -> None:
    seen = []
    with pytest.raises(ValueError, match="thirteen"):
        for i, _ in ordered_map(where, range(20), workers=2, window=4, inline=lambda i: i == 13):
            seen.append(i)
    assert seen == list(range(13))


def test_a_stream_of_reused_chunks_hands_nothing_to_a_worker(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unchanged volume is one run of reused chunks (thousands for 1 GiB): markers, no work."""
    from concurrent.futures import ThreadPoolExecutor

    from drsvc.chunks import ChunkStore, Reuse
    from drsvc.crypto import Keys
    from drsvc.storage import base
    from drsvc.storage.file import FileStore

    cs = ChunkStore.init(FileStore(tmp_path / "hot"), Keys.generate())
    first = cs.write_stream(bytes(range(256)) * 4096)
    submitted: list[object] = []

    class Counting(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            submitted.append(fn)
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(base, "ThreadPoolExecutor", Counting)
    again = cs.write_parts([Reuse(tuple(first.chunks))])
    assert again.chunks == first.chunks and len(first.chunks) > 1
    assert submitted == []
