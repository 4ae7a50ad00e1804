"""rados:// backend on the lab's Ceph: the shared suite, plus pool errors and the chunk store on RADOS."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from storage_suite import StorageSuite

from drsvc.chunks import ChunkStore
from drsvc.crypto import Keys
from drsvc.errors import InvalidInput, NotFound
from drsvc.storage import ObjectStore, open_store

POOL = "drsvc-hot"


@pytest.fixture(scope="module")
def hot_pool(lab) -> str:
    """The lab's hot pool (created by dev/lab; created here if an older lab lacks it)."""
    if POOL not in lab.ceph("osd", "pool", "ls").split():
        lab.ceph("osd", "pool", "create", POOL)
    return POOL


def _purge(store: ObjectStore) -> None:
    store.delete_many(list(store.list()))


@pytest.fixture
def rados_store(hot_pool: str) -> Iterator[ObjectStore]:
    store = open_store(f"rados://{hot_pool}/test-{uuid.uuid4().hex[:12]}")
    try:
        yield store
    finally:
        _purge(store)
        assert list(store.list()) == []
        store.close()


class TestRadosStore(StorageSuite):
    @pytest.fixture
    def store(self, rados_store: ObjectStore) -> ObjectStore:
        return rados_store


def test_missing_pool_is_a_clear_error(lab) -> None:
    with pytest.raises(NotFound, match="no-such-pool-xyz"):
        open_store("rados://no-such-pool-xyz/p")


def test_oversized_object_refused(rados_store: ObjectStore) -> None:
    with pytest.raises(InvalidInput, match="at most"):
        rados_store.put("big", b"\0" * (91 * 1024 * 1024))
    assert not rados_store.exists("big")


def test_object_larger_than_one_read(rados_store: ObjectStore) -> None:
    data = bytes(range(256)) * (40 * 1024)  # 10 MiB: more than the 4 MiB first read
    rados_store.put("large", data)
    assert rados_store.get("large") == data
    assert dict(rados_store.get_many(["large"]))["large"] == data


def test_chunk_store_on_rados(rados_store: ObjectStore) -> None:
    key = Keys.generate()
    cs = ChunkStore.init(rados_store, key)
    data = (b"log line %d\n" * 200_000) + bytes(range(256)) * 8192
    ref = cs.write_stream(io.BytesIO(data))
    again = ChunkStore.open(rados_store, key).write_stream(io.BytesIO(data))
    assert again.stats.chunks_new == 0
    assert cs.read_bytes(ref) == data
    assert cs.verify_chunks([c for c, _ in ref.chunks], read_data=True).ok
