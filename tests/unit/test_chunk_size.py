"""``[hot] chunk_kib``: the average chunk size a NEW store is made with; an existing store keeps its own.

The chunker parameters live in each store's sealed config (every writer must cut alike): the
setting shapes only a store not yet created, the cold store created by tiering takes the hot
store's parameters, and a hot store cutting larger chunks than an existing cold store accepts is
refused before anything is uploaded.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture)

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.chunks import ChunkerParams, ChunkStore, StreamRef
from drsvc.chunks.config import ConfigFile
from drsvc.chunks.cutter import AVG_KIB_RANGE
from drsvc.chunks.layout import CONFIG_KEY
from drsvc.config import CHUNK_KIB_RANGE, load_config
from drsvc.errors import ConfigError, InvalidInput
from drsvc.services import Services
from drsvc.storage.file import FileStore
from drsvc.storage.s3 import S3Store
from drsvc.tiering import TierJob

KiB, MiB = 1024, 1024 * 1024


def _config(tmp_path: Path, chunk_kib: Any = None) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    key = tmp_path / "drsvc.key"
    if not key.exists():
        key.write_text(os.urandom(32).hex())
        key.chmod(0o600)
    text = f'[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n[hot]\nstore = "file://{tmp_path}/hot"\n'
    if chunk_kib is not None:
        text += f"chunk_kib = {chunk_kib}\n"
    path = tmp_path / "drsvc.toml"
    path.write_text(text)
    return path


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Any]:
    """``services(chunk_kib)``: a fresh Services (a new process) on the same hot store, the config
    saying ``chunk_kib`` (None: not set)."""
    opened: list[Services] = []

    def make(chunk_kib: int | None = None) -> Services:
        config = load_config(_config(tmp_path, chunk_kib))
        opened.append(Services(config, Catalog.open(config.catalog.path)))
        return opened[-1]

    yield make
    for s in opened:
        s.catalog.close()


def _sizes(store: ChunkStore, data: bytes) -> list[int]:
    return [size for _, size in store.write_stream(data).chunks]


# ---------------------------------------------------------------- the setting


@pytest.mark.parametrize("bad", [0, 8, 48, 100, 2048, '"big"', "32.5"])
def test_a_broken_chunk_kib_names_the_file_and_the_field_and_exits_2(tmp_path, run_cli, bad):
    path = _config(tmp_path, bad)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.exit_code == 2
    assert any(d.startswith(f"{path}: hot.chunk_kib: ") for d in e.value.details), e.value.details
    result = run_cli("--config", str(path), "policy", "check")
    assert result.code == 2
    assert f"{path}: hot.chunk_kib: " in result.stderr and "Traceback" not in result.stderr


def test_chunk_kib_defaults_to_the_chunker_default_and_its_bounds_are_the_cutters(tmp_path):
    config = load_config(_config(tmp_path))
    assert config.hot is not None and config.hot.chunk_kib == 128
    assert ChunkerParams.for_average(config.hot.chunk_kib) == ChunkerParams()  # today's stores, unchanged
    assert CHUNK_KIB_RANGE == AVG_KIB_RANGE
    assert ChunkerParams.for_average(32) == ChunkerParams(8 * KiB, 32 * KiB, 128 * KiB)
    for kib in (16, 1024):
        ChunkerParams.for_average(kib)  # the whole range is a valid chunker
    for bad in (8, 48, 2048):
        with pytest.raises(InvalidInput, match="power of two"):
            ChunkerParams.for_average(bad)


# ---------------------------------------------------------------- a new store, an existing one


def test_a_new_store_made_with_32_kib_cuts_32_kib_chunks_and_records_it(tmp_path, services):
    hot = services(32).hot
    assert hot.params == ChunkerParams(8 * KiB, 32 * KiB, 128 * KiB)
    # the store's config says so (what every later writer reads), whatever a later config says
    assert ConfigFile.read(FileStore(tmp_path / "hot"), hot.keys).params == hot.params
    data = os.urandom(8 * MiB)
    sizes = _sizes(hot, data)
    assert max(sizes) <= 128 * KiB and min(sizes[:-1]) >= 8 * KiB
    assert 24 * KiB <= statistics.mean(sizes) <= 56 * KiB, statistics.mean(sizes)
    assert services(None).hot.params == hot.params  # reopened without the setting: still 32 KiB
    ref = services(None).hot.write_stream(data)
    assert [s for _, s in ref.chunks] == sizes  # cut alike: the same chunks, all deduplicated
    assert ref.stats.chunks_new == 0


def test_an_existing_store_keeps_its_chunk_size_and_the_operator_is_told_once(tmp_path, services, caplog, monkeypatch):
    monkeypatch.setattr("drsvc.services._at_a_terminal", lambda: True)  # a person runs it
    first = services(None).hot  # made before the setting existed: 128 KiB
    data = os.urandom(8 * MiB)
    sizes = _sizes(first, data)
    assert statistics.mean(sizes) >= 96 * KiB
    config_before = FileStore(tmp_path / "hot").get(CONFIG_KEY)
    with caplog.at_level(logging.WARNING, logger="drsvc"):
        later = services(32)
        hot = later.hot
        assert later.hot is hot  # opened once per process: said once
    assert hot.params == ChunkerParams()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "hot.chunk_kib = 32" in message and "128 KiB" in message and "never re-chunked" in message
    # never re-chunked: the same data gives the same chunks (nothing new), the config is untouched
    ref = hot.write_stream(data)
    assert [s for _, s in ref.chunks] == sizes and ref.stats.chunks_new == 0
    assert FileStore(tmp_path / "hot").get(CONFIG_KEY) == config_before
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="drsvc"):
        services(128).hot  # noqa: B018 (the setting agrees)
        services(None).hot  # noqa: B018 (not set)
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []


def test_a_cron_run_keeps_quiet_and_status_says_it_once_with_what_to_do(tmp_path, services, caplog, run_cli):
    """Every cron minute a new process opens the hot store: it records how the store cuts and says
    nothing on stderr; `drsvc status` has the one line (configured, used, kept, what to do)."""
    services(None).hot  # noqa: B018 (made with 128 KiB chunks)
    with caplog.at_level(logging.INFO, logger="drsvc"):
        for _ in range(3):  # three cron minutes
            services(32).hot  # noqa: B018
    said = [r for r in caplog.records if getattr(r, "drsvc", {}).get("event") == "store.chunk_size"]
    assert said and all(r.levelno == logging.INFO for r in said), [(r.levelname, r.getMessage()) for r in said]

    config = _config(tmp_path, 32)
    status = run_cli("--config", str(config), "--json", "status")
    assert status.code == 0, status.output  # a setting, not an objective
    lines = [p for p in json.loads(status.stdout)["problems"] if "chunk_kib" in p]
    assert len(lines) == 1, lines
    line = lines[0]
    assert str(config) in line and "hot.chunk_kib = 32" in line and "cuts 128 KiB chunks" in line
    assert "keeps them" in line and "Set chunk_kib = 128" in line and "new store" in line
    shown = run_cli("--config", str(config), "status")
    assert shown.stdout.count("chunk_kib = 32") == 1, shown.stdout
    # the operator follows the advice: the line goes at once (the config is read by status itself)
    for agreeing in (128, None):
        status = run_cli("--config", str(_config(tmp_path, agreeing)), "--json", "status")
        assert not [p for p in json.loads(status.stdout)["problems"] if "chunk_kib" in p], status.stdout


# ---------------------------------------------------------------- the cold store


NOW = clock.now()


@pytest.mark.usefixtures("aws")
def test_the_cold_store_is_created_with_the_hot_stores_chunk_size_and_reads_back(tmp_path):
    kit = ColdKit(tmp_path, chunk_kib=32)
    try:
        kit.policy("std", ["alice"])
        volume = os.urandom(3 * MiB)
        pid = kit.point("alice", clock.now() - timedelta(hours=5), volume, checkpoint=os.urandom(200_000))
        report = TierJob(kit.services, None).run(now=clock.now())
        assert [m.status for m in report.moves] == ["done"]
        hot, cold = kit.services.hot, kit.fresh_services().cold
        assert hot.params.avg_size == 32 * KiB and cold.params == hot.params
        manifest = cold.get_manifest("alice", pid)
        ref = StreamRef.from_dict(manifest["volume"]["stream"])
        assert max(size for _, size in ref.chunks) <= 128 * KiB and len(ref.chunks) >= 48
        assert cold.read_bytes(ref) == volume
    finally:
        kit.close()


@pytest.mark.usefixtures("aws")
def test_smaller_hot_chunks_tier_into_an_existing_default_cold_store(tmp_path):
    kit = ColdKit(tmp_path, chunk_kib=32)
    try:
        ChunkStore.init(S3Store(kit.bucket, "fleet"), kit.services.key_provider)  # made earlier at 128 KiB
        kit.policy("std", ["alice"])
        volume = os.urandom(2 * MiB)
        pid = kit.point("alice", clock.now() - timedelta(hours=5), volume)
        assert [m.status for m in TierJob(kit.services, None).run(now=clock.now()).moves] == ["done"]
        cold = kit.fresh_services().cold
        assert cold.params == ChunkerParams() and kit.services.hot.params.avg_size == 32 * KiB
        ref = StreamRef.from_dict(cold.get_manifest("alice", pid)["volume"]["stream"])
        assert cold.read_bytes(ref) == volume
    finally:
        kit.close()


@pytest.mark.usefixtures("aws")
def test_a_hot_store_with_larger_chunks_than_the_cold_store_takes_is_refused_before_any_upload(tmp_path):
    kit = ColdKit(tmp_path, chunk_kib=1024)
    try:
        cold_objects = S3Store(kit.bucket, "fleet")
        ChunkStore.init(cold_objects, kit.services.key_provider)  # made earlier at 128 KiB: chunks up to 512
        kit.policy("std", ["alice"])
        pid = kit.point("alice", clock.now() - timedelta(hours=5), os.urandom(2 * MiB))
        with pytest.raises(InvalidInput, match=r"takes chunks up to 512 KiB .* up to 4096 KiB"):
            TierJob(kit.services, None).run(now=clock.now())
        assert sorted(cold_objects.list("")) == [CONFIG_KEY]  # nothing but the config
        assert "cold" not in kit.catalog.point(pid)["tiers"]
    finally:
        kit.close()


def test_a_manifest_past_what_readers_accept_is_never_stored(tmp_path, services, monkeypatch):
    """A manifest lists every chunk (~35 bytes each, stored): smaller chunks bring a volume 4x closer
    to the readers' bound. One past it would be a point no one can read back: refused at write."""
    import drsvc.chunks.manifests as manifests

    hot = services(32).hot
    ref = hot.write_stream(os.urandom(2 * MiB))
    doc = {"volume": {"stream": ref.to_dict()}}
    hot.put_manifest("alice", "p1", doc)  # within the bound: stored and read back
    assert hot.get_manifest("alice", "p1") == doc
    monkeypatch.setattr(manifests, "MANIFEST_STORED_MAX", 512)
    with pytest.raises(InvalidInput, match=r"manifests/alice/p2: the manifest would be .* too many chunks"):
        hot.put_manifest("alice", "p2", doc)
    assert sorted(p for _, p in hot.list_manifests("alice")) == ["p1"]
