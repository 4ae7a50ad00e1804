"""The behaviour every ``ObjectStore`` backend must show (restic's backend test suite, in pytest).

Use it by subclassing and providing a ``store`` fixture that yields an empty store (and removes
what the test wrote afterwards)::

    from storage_suite import StorageSuite

    class TestFileStore(StorageSuite):
        @pytest.fixture
        def store(self, tmp_path):
            yield open_store(f"file://{tmp_path}")

Class attributes tune the expensive cases for slow backends (``many_keys`` > one listing page,
e.g. 1500 for S3's 1000-key pages).
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta

import pytest

from drsvc.errors import IntegrityError, InvalidInput, NotFound, ObjectTooLarge
from drsvc.storage import ObjectStore


class StorageSuite:
    many_keys = 1500
    batch_items = 200

    def test_is_an_object_store(self, store: ObjectStore) -> None:
        assert isinstance(store, ObjectStore)
        assert "://" in store.url

    def test_put_get_round_trip(self, store: ObjectStore) -> None:
        store.put("a/b/c", b"hello")
        assert store.get("a/b/c") == b"hello"

    def test_overwrite_replaces(self, store: ObjectStore) -> None:
        store.put("k", b"first version, longer")
        store.put("k", b"second")
        assert store.get("k") == b"second"
        assert store.size("k") == 6

    def test_get_missing_raises_not_found(self, store: ObjectStore) -> None:
        with pytest.raises(NotFound, match="nope/missing"):
            store.get("nope/missing")
        with pytest.raises(NotFound):
            store.size("nope/missing")

    def test_exists(self, store: ObjectStore) -> None:
        assert not store.exists("x/y")
        store.put("x/y", b"1")
        assert store.exists("x/y")
        assert not store.exists("x")  # a prefix is not an object

    def test_empty_object(self, store: ObjectStore) -> None:
        store.put("empty", b"")
        assert store.exists("empty")
        assert store.get("empty") == b""
        assert store.size("empty") == 0
        store.put("full", b"x" * 5000)
        assert dict(store.get_many(["empty", "full", "empty"])) == {"empty": b"", "full": b"x" * 5000}

    def test_binary_data(self, store: ObjectStore) -> None:
        data = bytes(range(256)) * 17 + b"\x00\xff\x00" + os.urandom(100_000)
        store.put("bin/0", data)
        assert store.get("bin/0") == data
        assert store.size("bin/0") == len(data)

    def test_size(self, store: ObjectStore) -> None:
        store.put("s/1", b"x" * 12345)
        assert store.size("s/1") == 12345

    def test_list_by_prefix(self, store: ObjectStore) -> None:
        for key in ["chunks/aa/aa1", "chunks/aa/aa2", "chunks/ab/ab1", "manifests/d1/p1", "config"]:
            store.put(key, b"v")
        assert sorted(store.list("chunks/")) == ["chunks/aa/aa1", "chunks/aa/aa2", "chunks/ab/ab1"]
        assert sorted(store.list("chunks/aa/")) == ["chunks/aa/aa1", "chunks/aa/aa2"]
        assert sorted(store.list("chunks/a")) == ["chunks/aa/aa1", "chunks/aa/aa2", "chunks/ab/ab1"]
        assert sorted(store.list("manifests/d1/")) == ["manifests/d1/p1"]
        assert sorted(store.list()) == sorted(
            ["chunks/aa/aa1", "chunks/aa/aa2", "chunks/ab/ab1", "manifests/d1/p1", "config"]
        )
        assert list(store.list("nothing/")) == []

    def test_list_many_keys(self, store: ObjectStore) -> None:
        keys = [f"many/{i % 7}/k{i:05d}" for i in range(self.many_keys)]
        assert store.put_many((k, b"") for k in keys) == len(keys)
        store.put("other/x", b"")
        assert sorted(store.list("many/")) == sorted(keys)
        assert store.delete_many(keys) == len(keys)
        assert list(store.list("many/")) == []

    def test_delete_idempotent(self, store: ObjectStore) -> None:
        store.put("d/1", b"x")
        store.delete("d/1")
        assert not store.exists("d/1")
        store.delete("d/1")
        store.delete("never/existed")
        assert store.delete_many(["d/1", "never/existed"]) == 2

    def test_put_many_get_many_order_and_content(self, store: ObjectStore) -> None:
        rng = random.Random(7)
        items = [(f"batch/{i:04d}", rng.randbytes(rng.randrange(0, 40_000))) for i in range(self.batch_items)]
        consumed = 0

        def lazily():  # put_many must accept a generator and consume it once
            nonlocal consumed
            for item in items:
                consumed += 1
                yield item

        assert store.put_many(lazily()) == len(items)
        assert consumed == len(items)
        order = [k for k, _ in items]
        rng.shuffle(order)
        got = list(store.get_many(iter(order)))
        want = dict(items)
        assert [k for k, _ in got] == order
        assert all(data == want[k] for k, data in got)

    def test_get_many_missing_raises(self, store: ObjectStore) -> None:
        store.put("gm/1", b"1")
        with pytest.raises(NotFound, match="gm/2"):
            list(store.get_many(["gm/1", "gm/2"]))

    def test_get_many_partial_consumption(self, store: ObjectStore) -> None:
        store.put_many((f"p/{i}", b"%d" % i) for i in range(50))
        it = store.get_many(f"p/{i}" for i in range(50))
        assert next(it) == ("p/0", b"0")
        close = getattr(it, "close", None)  # abandoning the read-ahead must not hang or leak
        if close is not None:
            close()

    def test_get_range(self, store: ObjectStore) -> None:
        data = bytes(range(256)) * 40
        store.put("gr/1", data)
        assert store.get_range("gr/1", 0, 10) == data[:10]
        assert store.get_range("gr/1", 1000, 5000) == data[1000:6000]
        assert store.get_range("gr/1", len(data) - 3, 100) == data[-3:]  # short at the end
        with pytest.raises(NotFound):
            store.get_range("gr/missing", 0, 10)

    def test_get_bounded_refuses_larger_objects(self, store: ObjectStore) -> None:
        big = os.urandom(5 * 1024 * 1024 + 7)  # past one RADOS read block
        store.put_many([("gb/small", b"12345"), ("gb/big", big), ("gb/empty", b"")])
        assert store.get("gb/small", max_size=5) == b"12345"
        assert store.get("gb/empty", max_size=0) == b""
        assert store.get("gb/big", max_size=len(big)) == big
        for key, limit in (("gb/small", 4), ("gb/big", 1000), ("gb/big", len(big) - 1)):
            with pytest.raises(ObjectTooLarge, match=f"{key}.*more than the {limit}") as e:
                store.get(key, max_size=limit)
            assert isinstance(e.value, IntegrityError) and e.value.exit_code == 4
        with pytest.raises(NotFound):
            store.get("gb/missing", max_size=10)

    def test_get_many_bounded(self, store: ObjectStore) -> None:
        store.put_many([("gmb/1", b"a" * 10), ("gmb/2", b"b" * 11)])
        assert [d for _, d in store.get_many(["gmb/1", "gmb/1"], max_size=10)] == [b"a" * 10] * 2
        with pytest.raises(ObjectTooLarge, match="gmb/2"):
            list(store.get_many(["gmb/1", "gmb/2"], max_size=10))

    def test_storage_class_and_retention_accepted(self, store: ObjectStore) -> None:
        until = datetime.now(UTC) + timedelta(days=1)
        store.put("sc/1", b"x", storage_class="STANDARD", retain_until=until)
        store.put_many([("sc/2", b"y")], storage_class="STANDARD", retain_until=until)
        assert store.get("sc/1") == b"x"
        assert store.get("sc/2") == b"y"

    @pytest.mark.parametrize("bad", ["", "/abs", "a//b", "../x", "a/./b", "a/"])
    def test_invalid_keys_rejected(self, store: ObjectStore, bad: str) -> None:
        with pytest.raises(InvalidInput):
            store.put(bad, b"x")
