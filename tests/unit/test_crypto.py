"""Key files, subkey derivation and the sealed format."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from drsvc.crypto import OVERHEAD, Keys, generate_key_file, load_key
from drsvc.errors import IntegrityError, InvalidInput


def test_key_file_round_trip_mode_and_no_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "drsvc.key"
    generate_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text().strip()
    assert len(text) == 64 and int(text, 16) >= 0
    keys = load_key(path)
    assert keys.master == bytes.fromhex(text)
    with pytest.raises(InvalidInput, match="already exists"):
        generate_key_file(path)
    assert path.read_text().strip() == text


@pytest.mark.parametrize("content", [b"", b"abc", b"zz" * 32, b"00" * 33, b"\xff" * 64])
def test_malformed_key_named_by_path_never_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(InvalidInput) as e:
        load_key(path)
    assert str(path) in str(e.value)
    if content:
        assert content.decode("latin-1") not in str(e.value)


def test_missing_and_world_readable_key(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_key(tmp_path / "nope")
    path = tmp_path / "k"
    generate_key_file(path)
    path.chmod(0o644)
    with pytest.raises(InvalidInput, match="chmod 600"):
        load_key(path)


def test_subkeys_independent_and_stable() -> None:
    master = bytes(range(32))
    a, b = Keys(master), Keys(master)
    assert (a.id_key, a.enc_key, a.chunker_seed, a.fingerprint) == (
        b.id_key,
        b.enc_key,
        b.chunker_seed,
        b.fingerprint,
    )
    assert len({a.id_key, a.enc_key, master}) == 3
    assert master.hex() not in repr(a) and a.fingerprint in repr(a)
    assert a.chunk_id(b"x") == b.chunk_id(b"x") != Keys.generate().chunk_id(b"x")
    assert len(a.chunk_id(b"x")) == 64


def test_seal_open_and_every_tampering_detected() -> None:
    k = Keys.generate()
    blob = k.seal(b"secret payload", b"drsvc/chunks/aa/aa")
    assert len(blob) == len(b"secret payload") + OVERHEAD
    assert b"secret payload" not in blob
    assert k.open_(blob, b"drsvc/chunks/aa/aa") == b"secret payload"
    assert k.seal(b"x", b"a") != k.seal(b"x", b"a")  # random nonce
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError):
            k.open_(bytes(bad), b"drsvc/chunks/aa/aa")
    with pytest.raises(IntegrityError, match="drsvc/manifests/d/p"):
        k.open_(blob, b"drsvc/manifests/d/p")  # swapped role/key
    with pytest.raises(IntegrityError):
        k.open_(blob[:10], b"drsvc/chunks/aa/aa")
    with pytest.raises(IntegrityError):
        Keys(os.urandom(32)).open_(blob, b"drsvc/chunks/aa/aa")


def test_verify_authenticates_like_open_and_reuses_its_buffer() -> None:
    k = Keys.generate()
    aad = b"drsvc/chunks/aa/aa"
    small, large = k.seal(b"x" * 10, aad), k.seal(os.urandom(3 << 20), aad)  # grows the scratch buffer
    for blob in (small, large, small, memoryview(large)):
        k.verify(blob, aad)
    for i in (0, 1, 13, len(small) // 2, len(small) - 1):
        bad = bytearray(small)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError):
            k.verify(bytes(bad), aad)
    with pytest.raises(IntegrityError, match="drsvc/manifests/d/p"):
        k.verify(small, b"drsvc/manifests/d/p")
    with pytest.raises(IntegrityError, match="truncated"):
        k.verify(small[:10], aad)
    with pytest.raises(IntegrityError):
        Keys(os.urandom(32)).verify(large, aad)


def test_chunker_seed_usable_by_fastcdc_for_any_key() -> None:
    from pyfastcdc import FastCDC

    for _ in range(64):
        seed = Keys.generate().chunker_seed
        assert 0 < seed < 2**63
        FastCDC(256 * 1024, seed=seed)
