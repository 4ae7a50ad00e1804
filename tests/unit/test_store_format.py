"""The on-store format is pinned: stores written by an older drsvc are read byte for byte, and
today's writer produces the same objects.

``golden/chunkstore-v4`` was written by ``golden/make_chunkstore.py`` with the drsvc of the
single-module chunk store (before ``drsvc.chunks`` became a package). These tests read it with
today's code and decode it here, independently of ``drsvc.chunks``, from the format as documented:
``sealed = version | nonce | AES-256-GCM(payload, aad = "drsvc/" + object key) | tag``, a chunk's
payload ``codec byte (0 raw, 1 zstd) | body``, manifests and indexes ``zstd(JSON)``. If one of
them fails, the format moved: either a bug, or a deliberate new version that needs its own
golden store and readers for this one.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import zstandard

from drsvc.backup import chunk_objects
from drsvc.chunks import ChunkerParams, ChunkStore, StreamRef, chunk_key, index_key
from drsvc.chunks.refs import chunk_list_hash
from drsvc.crypto import Keys
from drsvc.storage.file import FileStore

GOLDEN = Path(__file__).parent / "golden"
STORE = GOLDEN / "chunkstore-v4"


def _maker() -> Any:
    spec = importlib.util.spec_from_file_location("make_chunkstore", GOLDEN / "make_chunkstore.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_chunkstore"] = module
    spec.loader.exec_module(module)
    return module


mk = _maker()
KEYS = Keys(mk.KEY)


def _open(name: str) -> ChunkStore:
    return ChunkStore.open(FileStore(STORE / name), KEYS)


def _unseal(root: Path, key: str) -> bytes:
    return KEYS.open_((root / key).read_bytes(), b"drsvc/" + key.encode())


def _unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data, max_output_size=64 << 20)


def _files(root: Path, prefix: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / prefix).rglob("*") if p.is_file())


@pytest.mark.parametrize("name", ["hot", "cold"])
def test_old_store_reads_byte_for_byte_and_verifies(name: str) -> None:
    cs = _open(name)
    assert sorted(cs.list_manifests()) == [(mk.DESKTOP, p) for p in mk.POINTS]
    wanted: set[str] = set()
    for pid in mk.POINTS:
        doc = cs.get_manifest(mk.DESKTOP, pid)
        volume = StreamRef.from_dict(doc["volume"]["stream"])
        memory = StreamRef.from_dict(doc["memory"]["stream"])
        assert cs.read_bytes(volume) == b"".join(mk.objects(pid))
        assert cs.read_bytes(memory) == mk.stream(pid)
        wanted |= {cid for ref in (volume, memory) for cid, _ in ref.chunks}
    report = cs.verify_chunks(wanted, read_data=True)
    assert report.ok and report.checked == len(wanted) > 40
    assert set(cs.list_chunk_ids()) == wanted


def test_old_packed_store_has_blobs_and_frames() -> None:
    """The golden cold store exercises both kinds of pack entries (else the test above proves less)."""
    cs = _open("cold")
    indexes = cs.refresh_packs()
    entries = [e for idx in indexes.values() for e in idx.entries]
    assert len(indexes) >= 2
    assert any(e.in_frame for e in entries) and any(not e.in_frame for e in entries)


def _chunk_payloads(root: Path) -> dict[str, bytes]:
    return {key: _unseal(root, key) for key in _files(root, "chunks")}


def _index_docs(root: Path) -> list[list[Any]]:
    docs = []
    for key in _files(root, "index"):
        doc = json.loads(_unzstd(_unseal(root, key)))
        assert doc["format"] == "drsvc-pack-index" and doc["pack"] == key.split("/")[1]
        assert (root / "packs" / doc["pack"][:2] / doc["pack"]).stat().st_size == doc["size"]
        docs.append([doc["version"], doc["size"], doc["chunks"]])
    return sorted(docs)


def _settings(root: Path) -> tuple[int, dict[str, Any]]:
    """(version, settings) of a config: sealed since version 5, plaintext with a key check before."""
    config = json.loads((root / "config").read_bytes())
    assert config.pop("key_fingerprint") == KEYS.fingerprint
    if config["version"] >= 5:
        assert set(config) == {"format", "version", "sealed"}
        settings = json.loads(KEYS.open_(bytes.fromhex(config["sealed"]), b"drsvc/config"))
        assert (settings["format"], settings["version"]) == (config["format"], config["version"])
    else:
        check = KEYS.open_(bytes.fromhex(config.pop("key_check")), b"drsvc/config")
        assert check == b"drsvc chunk store key check v1"
        settings = config
    return settings.pop("version"), settings


def test_todays_writer_writes_the_same_objects(tmp_path: Path) -> None:
    """Write the golden content again with today's code: same keys, payloads, indexes, manifests."""
    out = tmp_path / "again"
    mk.OUT, saved = out, mk.OUT
    try:
        mk.main()
    finally:
        mk.OUT = saved
    for name in ("hot", "cold"):
        old, new = STORE / name, out / name
        # A deliberate change since the golden store: the config is sealed (version 5).
        (old_version, old_settings), (new_version, new_settings) = _settings(old), _settings(new)
        assert (old_version, new_version) == ({"hot": 1, "cold": 4}[name], 5)
        assert new_settings == old_settings
        for prefix in ("chunks", "manifests"):
            assert _files(new, prefix) == _files(old, prefix)
        assert _chunk_payloads(new) == _chunk_payloads(old)
        for key in _files(old, "manifests"):
            was, now = json.loads(_unzstd(_unseal(old, key))), json.loads(_unzstd(_unseal(new, key)))
            # Deliberate since then: a volume stream's hash is its chunk list's (each byte is hashed
            # once, into its chunk id); the golden one hashes the whole plaintext, and still reads.
            stream = now["volume"]["stream"]
            assert stream["hash"] == chunk_list_hash(KEYS.hasher(), [(c, n) for c, n in stream["chunks"]])
            stream["hash"] = was["volume"]["stream"]["hash"]
            assert now == was
        # Pack ids are random: compare each index's content, and the packs' sizes through it.
        assert _index_docs(new) == _index_docs(old)


def test_golden_manifests_decode_independently() -> None:
    """The manifests and chunks decode with nothing but the documented format (no drsvc.chunks)."""
    root = STORE / "hot"
    for pid in mk.POINTS:
        doc = json.loads(_unzstd(_unseal(root, f"manifests/{mk.DESKTOP}/{pid}")))
        plain = bytearray()
        for cid, size in doc["volume"]["stream"]["chunks"]:
            payload = _unseal(root, chunk_key(cid))
            body = _unzstd(payload[1:]) if payload[0] == 1 else payload[1:]
            assert payload[0] in (0, 1) and len(body) == size and KEYS.chunk_id(body) == cid
            plain += body
        assert bytes(plain) == b"".join(mk.objects(pid))
        assert set(chunk_objects(doc)) <= {cid for cid, _ in doc["volume"]["stream"]["chunks"]}
    assert index_key("ab" * 16) == "index/" + "ab" * 16
    assert ChunkerParams(**mk.PARAMS) == _open("hot").params


@pytest.mark.parametrize("name", ["hot", "cold"])
def test_an_old_store_is_sealed_by_its_first_write_not_by_readers(tmp_path: Path, name: str) -> None:
    """The migration rule of drsvc.chunks.config: read as is, sealed (same settings) by the next write."""
    root = tmp_path / name
    shutil.copytree(STORE / name, root)
    before = (root / "config").read_bytes()
    cs = ChunkStore.open(FileStore(root), KEYS)
    doc = cs.get_manifest(mk.DESKTOP, "p1")
    cs.verify_chunks([cid for cid, _ in doc["memory"]["stream"]["chunks"]], read_data=True)
    assert (root / "config").read_bytes() == before and cs.config is not None and not cs.config.sealed
    old_version, old_settings = _settings(root)
    cs.put_manifest(mk.DESKTOP, "p3", doc)  # any write
    version, settings = _settings(root)
    assert (version, settings) == (5, old_settings) and old_version < 5
    again = ChunkStore.open(FileStore(root), KEYS)
    assert again.config is not None and again.config.sealed and again.params == cs.params
    assert again.read_bytes(StreamRef.from_dict(doc["volume"]["stream"])) == b"".join(mk.objects("p1"))
