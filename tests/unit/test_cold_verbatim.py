"""``[cold] recompress = false``: the cold tier packs every hot chunk as the hot store holds it.

Compressible chunks go into packs verbatim (codec byte 1, the hot tier's zstd) instead of being
decompressed and compressed again in frames. Every blob is still authenticated first, so hot-store
rot fails the tier step (exit 1, or 6 beside a good point) and never becomes a packed copy; such
packs restore byte-exact through ``restore --tier cold --verify``, ``verify --read-data`` reads
them, a byte flipped in one fails with exit 4; and a store holding frames (what drsvc wrote before,
and writes by default) and verbatim packs side by side reads both.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from deployment import Deployment, digests

from drsvc import clock
from drsvc.chunks import ChunkStore, chunk_key, pack_key
from drsvc.chunks.codec import CODEC_ZSTD, Codec
from drsvc.chunks.layout import object_aad
from drsvc.crypto import Keys
from drsvc.storage.file import FileStore


def text(size: int, seed: int) -> bytes:
    """Log lines: compressible, so the hot tier stores them zstd-compressed (codec byte 1)."""
    rng = random.Random(seed)
    vocab = [f"svc={rng.randrange(10**6)} path=/api/{rng.randrange(10**6)}" for _ in range(2000)]
    lines, n = [], 0
    while n < size:
        line = f"{rng.randrange(10**6):06d} {rng.choice(vocab)} ms={rng.randrange(999)}\n"
        lines.append(line)
        n += len(line)
    return "".join(lines).encode()[:size]


def compressible_desktop(d: Deployment, name: str, seed: int) -> dict[str, Any]:
    """A desktop whose volume is mostly text (objects of several chunks each) and one random object."""
    objects: dict[str, Any] = {
        f"home/{name}/log-{i}.txt": (text(300_000 + 7_000 * i, seed * 10 + i), {"user.n": str(i).encode()}, {})
        for i in range(3)
    }
    objects[f"home/{name}/photo.jpg"] = (random.Random(seed).randbytes(200_000), {}, {})
    d.world.add_desktop(name, objects)
    return objects


def cold_verbatim(d: Deployment, on: bool = True) -> None:
    """Set ``[cold] recompress`` in the deployment's config (false: verbatim packs)."""
    lines = [ln for ln in d.config_path.read_text().splitlines(keepends=True) if not ln.startswith("recompress")]
    setting = f"recompress = {'false' if on else 'true'}\n"
    d.config_path.write_text("".join(lines).replace("pack_mib = 1\n", "pack_mib = 1\n" + setting))


def codec_byte(codec: Codec, cid: str, blob: bytes) -> int:
    """The codec byte of a loose chunk object (authenticated)."""
    return codec.keys.open_(blob, object_aad(chunk_key(cid)))[0]


def aged_backup(d: Deployment, *names: str) -> list[str]:
    return d.backup_at(clock.now() - timedelta(hours=2), *names)  # past the policy's tiering.after of 1h


def cold_indexes(d: Deployment) -> list[Any]:
    return list(d.services().cold.refresh_packs().values())


def test_verbatim_packs_hold_the_hot_blobs_and_restore_and_verify_byte_exact(deploy: Deployment) -> None:
    cold_verbatim(deploy)
    objects = compressible_desktop(deploy, "alice", 1)
    (pid,) = aged_backup(deploy, "alice")
    r = deploy.cli("tier")
    assert r.code == 0, r.output
    services = deploy.services()
    hot = services.hot
    entries = [e for index in cold_indexes(deploy) for e in index.entries]
    assert entries and not any(e.in_frame for e in entries), "no frames: every chunk packed verbatim"
    codecs = []
    for index in cold_indexes(deploy):
        pack = services.cold.store.get(pack_key(index.pack_id))
        for e in index.entries:
            blob = hot.store.get(chunk_key(e.cid))
            assert pack[e.offset : e.offset + e.length] == blob  # the hot object's bytes, not re-encoded
            codecs.append(codec_byte(hot.keyring.codec_of(blob), e.cid, blob))
    assert codecs.count(CODEC_ZSTD) >= 6, "the premise: compressible chunks are among them"
    # restore from the cold copy alone, checking every object against the manifest's digests
    (deploy.root / "hot").rename(deploy.root / "hot-away")
    deploy.world.write_volume("desktops", "alice", {"x": (b"something else", {}, {})})
    r = deploy.cli("--json", "restore", "alice", "--point", pid, "--tier", "cold", "--force", "--verify")
    assert r.code == 0, r.output
    assert r.json()["checks"]["data"] == f"{len(objects)} objects match the manifest's digests"
    assert digests(deploy.world.read_volume("desktops", "alice")) == digests(objects)
    assert not (deploy.root / "hot").exists(), "a missing hot store holding recorded copies is never created"
    (deploy.root / "hot-away").rename(deploy.root / "hot")
    r = deploy.cli("verify", pid, "--read-data")
    assert r.code == 0, r.output


def test_a_byte_flipped_in_a_verbatim_pack_fails_verify_and_restore_with_exit_4(deploy: Deployment) -> None:
    cold_verbatim(deploy)
    compressible_desktop(deploy, "alice", 2)
    (pid,) = aged_backup(deploy, "alice")
    assert deploy.cli("tier").code == 0
    [index, *_] = cold_indexes(deploy)
    victim = index.entries[1]
    path = deploy.root / "cold" / pack_key(index.pack_id)
    data = bytearray(path.read_bytes())
    data[victim.offset + victim.length // 2] ^= 0x08
    path.write_bytes(bytes(data))
    r = deploy.cli("verify", pid, "--read-data")
    assert r.code == 4, r.output
    r = deploy.cli("restore", "alice", "--point", pid, "--tier", "cold", "--force", "--verify")
    assert r.code == 4, r.output
    assert victim.cid in r.output


@pytest.mark.parametrize("verbatim", [False, True])
def test_a_corrupt_hot_chunk_is_never_packed_either_way(deploy: Deployment, verbatim: bool) -> None:
    cold_verbatim(deploy, verbatim)
    compressible_desktop(deploy, "alice", 3)
    compressible_desktop(deploy, "bob", 4)
    ids = dict(zip(["alice", "bob"], aged_backup(deploy, "alice", "bob"), strict=True))
    hot = deploy.services().hot
    first = hot.get_manifest("alice", ids["alice"])["volume"]["stream"]["chunks"][0][0]
    blob = hot.store.get(chunk_key(first))
    assert codec_byte(hot.keyring.codec_of(blob), first, blob) == CODEC_ZSTD  # a chunk verbatim would carry as is
    cid = deploy.damage_hot_chunk("alice", ids["alice"])
    assert cid == first
    r = deploy.cli("tier")
    assert r.code == 6, r.output  # bob's point went cold, alice's failed naming the chunk
    assert cid in r.output
    packed = {e.cid for index in cold_indexes(deploy) for e in index.entries}
    assert packed and cid not in packed
    tiers = {p["desktop"]: sorted(p["tiers"]) for p in deploy.cli("--json", "points", "list").json()}
    assert tiers == {"alice": ["hot"], "bob": ["cold", "hot"]}
    assert deploy.cli("verify", ids["alice"], "--read-data").code == 4


def test_frames_and_verbatim_packs_in_one_cold_store_read_together(deploy: Deployment) -> None:
    """A cold store written by frames (drsvc before, or the default) then verbatim: both restore."""
    a = compressible_desktop(deploy, "alice", 5)
    (pa,) = aged_backup(deploy, "alice")
    assert deploy.cli("tier").code == 0
    framed = {i.pack_id for i in cold_indexes(deploy) if any(e.in_frame for e in i.entries)}
    assert framed, "the default packs compressible chunks in frames"
    cold_verbatim(deploy)
    b = compressible_desktop(deploy, "bob", 6)
    (pb,) = aged_backup(deploy, "bob")
    assert deploy.cli("tier").code == 0
    later = [i for i in cold_indexes(deploy) if i.pack_id not in framed]
    assert later and not any(e.in_frame for i in later for e in i.entries)
    (deploy.root / "hot").rename(deploy.root / "hot-away")
    for name, pid, objects in (("alice", pa, a), ("bob", pb, b)):
        r = deploy.cli("--json", "restore", name, "--point", pid, "--tier", "cold", "--force", "--verify")
        assert r.code == 0, r.output
        assert digests(deploy.world.read_volume("desktops", name)) == digests(objects)


def test_the_pack_writer_does_no_zstd_when_packing_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys.generate()
    hot = ChunkStore.init(FileStore(tmp_path / "hot", fsync=False), keys, level=1)
    data = text(4_000_000, 7)  # ~25 chunks: the keyed cutter gives 2 MB as few as 9
    ref = hot.write_stream(data)
    cold = ChunkStore.init(FileStore(tmp_path / "cold", fsync=False), keys, pack_size=4 << 20, recompress=False)

    def no_zstd(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("verbatim packing compressed or decompressed a chunk")

    with monkeypatch.context() as m:
        m.setattr(Codec, "compress", no_zstd)
        m.setattr(Codec, "uncompress", no_zstd)
        [index] = cold.write_packs(hot.sealed_chunks([cid for cid, _ in ref.chunks]))
    assert len(index.entries) == len(ref.chunks) >= 10 and not any(e.in_frame for e in index.entries)
    assert index.size == sum(len(hot.store.get(chunk_key(cid))) for cid, _ in ref.chunks)
    assert cold.read_bytes(ref) == data
