"""The local cache of the cold store's pack indexes: used, never trusted, bounded, the listing the truth.

ColdKit (file:// hot store, moto cold store); a new ``Services`` stands for a new process.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture, used by kit)

from drsvc import clock
from drsvc.chunks import ChunkStore, index_key
from drsvc.chunks.index_cache import IndexCache
from drsvc.tiering import TierJob

MiB = 1024 * 1024


@pytest.fixture
def kit(tmp_path: Path, aws: None) -> Iterator[ColdKit]:  # noqa: F811
    kit = ColdKit(tmp_path, pack_mib=1)  # small packs: several indexes
    kit.policy("p", ["desk"])
    now = clock.now()
    kit.point("desk", now - timedelta(hours=3), random.Random(5).randbytes(4 * MiB))
    assert TierJob(kit.services, None).run(now=now).exit_code == 0
    yield kit
    kit.catalog.close()


def fresh_cold(kit: ColdKit) -> tuple[ChunkStore, list[str]]:
    """The cold store as a new process opens it, and the keys of every index it GETs from the store."""
    cold = kit.fresh_services().cold
    fetched: list[str] = []
    real = cold.store.get_many

    def get_many(keys: Any, **kw: Any) -> Any:
        keys = list(keys)
        fetched.extend(k for k in keys if k.startswith("index/"))
        return real(keys, **kw)

    cold.store.get_many = get_many  # type: ignore[method-assign]
    return cold, fetched


def cache_of(cold: ChunkStore) -> IndexCache:
    cache = cold.packs.cache
    assert cache is not None
    return cache


def as_loaded(cold: ChunkStore) -> dict[str, Any]:
    return {pid: index.entries for pid, index in cold.refresh_packs().items()}


def test_a_new_process_loads_the_indexes_from_the_cache_not_the_store(kit: ColdKit) -> None:
    first, fetched = fresh_cold(kit)
    loaded = as_loaded(first)
    assert len(loaded) >= 3 and len(fetched) == len(loaded)  # an empty cache: every index fetched
    cache = cache_of(first)
    assert sorted(p.name for p in cache.root.iterdir()) == sorted(loaded)
    assert cache.root.is_relative_to(kit.root) and oct(cache.root.stat().st_mode & 0o777) == "0o700"
    second, fetched = fresh_cold(kit)
    assert as_loaded(second) == loaded
    assert fetched == []


@pytest.mark.parametrize("damage", ["one bit flipped", "truncated", "another pack's index", "empty"])
def test_a_damaged_cache_entry_is_reported_and_fetched_again_never_trusted(
    kit: ColdKit, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cold, _ = fresh_cold(kit)
    loaded = as_loaded(cold)
    victim, other = sorted(loaded)[:2]
    path = cache_of(cold).root / victim
    good = path.read_bytes()
    bad = {
        "one bit flipped": good[:40] + bytes([good[40] ^ 1]) + good[41:],
        "truncated": good[: len(good) // 2],
        "another pack's index": (cache_of(cold).root / other).read_bytes(),
        "empty": b"",
    }[damage]
    path.write_bytes(bad)
    again, fetched = fresh_cold(kit)
    with caplog.at_level(logging.WARNING, logger="drsvc"):
        assert as_loaded(again) == loaded  # what the store holds, not what the cache said
    assert fetched == [index_key(victim)]
    if damage != "empty":  # an empty file is no entry at all: fetched without a word
        assert any(victim in r.getMessage() and "fetched again" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == good  # replaced by the store's copy


def test_a_pack_pruned_while_cached_is_gone_from_the_store_and_the_cache(kit: ColdKit) -> None:
    cold, _ = fresh_cold(kit)
    loaded = as_loaded(cold)
    gone = sorted(loaded)[0]
    other = kit.fresh_services().cold  # another process (prune) deletes the pack
    other.delete_packs([gone])
    again, fetched = fresh_cold(kit)
    after = as_loaded(again)
    assert gone not in after and set(after) == set(loaded) - {gone}
    assert fetched == []
    assert not (cache_of(again).root / gone).exists()
    assert again.pack_of(loaded[gone][0].cid) is None


def test_the_cache_stays_within_its_limit_oldest_entries_first(kit: ColdKit) -> None:
    cold, _ = fresh_cold(kit)
    loaded = as_loaded(cold)
    root = cache_of(cold).root
    sizes = {p.name: p.stat().st_size for p in root.iterdir()}
    ordered = sorted(sizes)
    for n, pid in enumerate(ordered):  # written one after the other, the first oldest
        os.utime(root / pid, (1_000_000 + n, 1_000_000 + n))
    limit = sum(sizes.values()) - sizes[ordered[0]]
    IndexCache(root, limit).keep_only(loaded)
    assert sorted(p.name for p in root.iterdir()) == ordered[1:]
    IndexCache(root, 0).keep_only(loaded)
    assert list(root.iterdir()) == []


def test_no_cache_when_the_config_says_zero(kit: ColdKit) -> None:
    text = kit.root.joinpath("drsvc.toml").read_text()
    assert "pack_mib = 1\n" in text
    kit.__class__ = type(
        "NoCacheKit",
        (ColdKit,),
        {"config_text": property(lambda k: text.replace("pack_mib = 1\n", "pack_mib = 1\nindex_cache_mib = 0\n"))},
    )
    cold, fetched = fresh_cold(kit)
    assert cold.packs.cache is None
    loaded = as_loaded(cold)
    assert len(fetched) == len(loaded)


def test_a_stalled_index_get_ends_at_its_deadline_not_never(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that lists an index, then never answers its GET: the refresh fails with the
    store's timeout error (the read deadline every S3 call has), instead of waiting for the answer."""
    import http.server
    import threading

    from drsvc.chunks.index import PackDirectory
    from drsvc.errors import BackendTimeout
    from drsvc.storage.s3 import S3Store

    pid = "ab" * 16
    release = threading.Event()
    asked: list[str] = []

    class Stalling(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_a: Any) -> None:
            return None

        def do_GET(self) -> None:
            asked.append(self.path)
            if "list-type=2" in self.path:
                key = f"index/{pid}" if "prefix=index" in self.path else f"packs/{pid[:2]}/{pid}"
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><KeyCount>1</KeyCount>'
                    f"<IsTruncated>false</IsTruncated><Contents><Key>{key}</Key><Size>10</Size></Contents>"
                    "</ListBucketResult>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            release.wait(60)  # the stalled GET: answers only once the test is over

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    try:
        store = S3Store(
            "b",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
            region="us-east-1",
            create=False,
            read_timeout=0.5,
            connect_timeout=0.5,
            max_attempts=1,
        )
        directory = PackDirectory(store, lambda _blob: pytest.fail("nothing arrived to open"), 1 << 20)
        with pytest.raises(BackendTimeout, match="timeout"):
            directory.refresh()
        assert any(path.startswith(f"/b/index/{pid}") for path in asked)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
