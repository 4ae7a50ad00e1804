"""Keys and authenticated encryption for stored chunks and manifests.

One 32-byte master key lives in a key file (hex, mode 0600) that is never stored beside the data.
Independent subkeys are derived from it with BLAKE3's key derivation mode:

- ``id_key``: keyed BLAKE3 of a chunk's plaintext → its 64-hex id (dedup without revealing
  content hashes to whoever can list the bucket), also the whole-stream hash;
- ``enc_key``: AES-256-GCM; every object gets a random 12-byte nonce and is bound to its role and
  key through the associated data, so a chunk cannot be swapped for a manifest or another chunk;
- ``chunker_seed``: keys FastCDC's gear table, so chunk sizes do not fingerprint known files;
- ``fingerprint``: a short public id of the key, written into the store config so a wrong key
  is recognised by name.

Sealed format: ``version (1 byte) | nonce (12) | ciphertext | tag (16)``. Random nonces are fine
up to ~2^32 objects per key (≈1 PiB of 256 KiB chunks).
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from drsvc.errors import IntegrityError, InvalidInput

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_VERSION = 1
OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES

_CTX = "drsvc 2024-06 {} v1"


def generate_key_file(path: str | os.PathLike[str]) -> Path:
    """Write a new random master key (64 hex chars) to ``path`` with mode 0600; never overwrite."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError as e:
        raise InvalidInput(f"key file {p} already exists; refusing to overwrite a key") from e
    except OSError as e:
        raise InvalidInput(f"cannot create key file {p}: {e.strerror or e}") from e
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed it; never widened
        os.write(fd, os.urandom(KEY_BYTES).hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return p


def load_key(path: str | os.PathLike[str]) -> Keys:
    """Read and validate a key file; errors name the path, never the content."""
    p = Path(path)
    try:
        st = p.stat()
        raw = p.read_bytes()
    except FileNotFoundError as e:
        raise InvalidInput(f"key file {p} does not exist (create one with generate_key_file / drsvc init)") from e
    except OSError as e:
        raise InvalidInput(f"cannot read key file {p}: {e.strerror or e}") from e
    if st.st_mode & stat.S_IROTH:
        raise InvalidInput(f"key file {p} is readable by everyone; chmod 600 {p}")
    text = raw.strip()
    if len(text) != 2 * KEY_BYTES:
        raise InvalidInput(f"key file {p} is malformed: expected {2 * KEY_BYTES} hex characters")
    try:
        master = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput(f"key file {p} is malformed: expected {2 * KEY_BYTES} hex characters") from None
    return Keys(master)


def _derive(master: bytes, purpose: str) -> bytes:
    return blake3.blake3(master, derive_key_context=_CTX.format(purpose)).digest()


@dataclass(frozen=True, repr=False)
class Keys:
    """The master key and its derived subkeys; ``repr`` shows only the public fingerprint."""

    master: bytes
    id_key: bytes = field(init=False)
    enc_key: bytes = field(init=False)
    chunker_seed: int = field(init=False)
    fingerprint: str = field(init=False)
    _cipher: Cipher = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.master, bytes) or len(self.master) != KEY_BYTES:
            raise InvalidInput(f"a master key is {KEY_BYTES} bytes")
        object.__setattr__(self, "id_key", _derive(self.master, "chunk id"))
        object.__setattr__(self, "enc_key", _derive(self.master, "aes-256-gcm"))
        # 63 bits: pyfastcdc's Cython code computes ``seed << 1`` into a uint64
        seed = (int.from_bytes(_derive(self.master, "fastcdc seed")[:8], "little") >> 1) or 1
        object.__setattr__(self, "chunker_seed", seed)
        object.__setattr__(self, "fingerprint", _derive(self.master, "fingerprint")[:8].hex())
        object.__setattr__(self, "_cipher", Cipher(self.enc_key))

    def __repr__(self) -> str:
        return f"Keys(fingerprint={self.fingerprint})"

    @classmethod
    def generate(cls) -> Keys:
        """A fresh random key (tests, ``init``); persist it with a key file in real use."""
        return cls(os.urandom(KEY_BYTES))

    def chunk_id(self, data: bytes | memoryview) -> str:
        """Keyed BLAKE3 of ``data`` as 64 hex chars."""
        return blake3.blake3(data, key=self.id_key).hexdigest()

    def hasher(self) -> blake3.blake3:
        """An incremental keyed BLAKE3 (the whole-stream hash)."""
        return blake3.blake3(key=self.id_key)

    def seal(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` bound to ``aad`` (see ``Cipher.seal``)."""
        return self._cipher.seal(plaintext, aad)

    def open_(self, blob: bytes | memoryview, aad: bytes) -> bytes:
        """Authenticate and decrypt; raise ``IntegrityError`` on any tampering (see ``Cipher.open_``)."""
        return self._cipher.open_(blob, aad)

    def verify(self, blob: bytes | memoryview, aad: bytes) -> memoryview:
        """Authenticate ``blob`` sealed for ``aad``; the plaintext in a scratch buffer (see ``Cipher.verify``)."""
        return self._cipher.verify(blob, aad)


class Cipher:
    """AES-256-GCM with random nonces and the object's role/key as associated data."""

    def __init__(self, enc_key: bytes) -> None:
        self._aead = AESGCM(enc_key)
        self._scratch = threading.local()  # verify's reusable plaintext buffer, one per thread

    def seal(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` bound to ``aad``."""
        nonce = os.urandom(NONCE_BYTES)
        return bytes([SEAL_VERSION]) + nonce + self._aead.encrypt(nonce, bytes(plaintext), aad)

    @staticmethod
    def _check_header(blob: bytes | memoryview, aad: bytes) -> None:
        if len(blob) < OVERHEAD:
            raise IntegrityError(f"{aad.decode('utf-8', 'replace')}: sealed object truncated ({len(blob)} bytes)")
        if blob[0] != SEAL_VERSION:
            raise IntegrityError(f"{aad.decode('utf-8', 'replace')}: unknown sealed format version {blob[0]}")

    @staticmethod
    def _tampered(aad: bytes) -> IntegrityError:
        return IntegrityError(
            f"{aad.decode('utf-8', 'replace')}: authentication failed "
            "(tampered, corrupted, misplaced or sealed with another key)"
        )

    def open_(self, blob: bytes | memoryview, aad: bytes) -> bytes:
        """Authenticate and decrypt ``blob`` sealed for ``aad``; raise ``IntegrityError`` on any tampering."""
        self._check_header(blob, aad)
        try:
            return self._aead.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], aad)
        except InvalidTag:
            raise self._tampered(aad) from None

    def verify(self, blob: bytes | memoryview, aad: bytes) -> memoryview:
        """Authenticate ``blob`` sealed for ``aad`` (``IntegrityError`` as ``open_``) into a scratch buffer.

        The plaintext returned is a view of a per-thread buffer, valid until this thread's next
        ``verify``: for callers that look at it briefly (a codec byte) or not at all.

        GCM cannot check its tag without running the whole ciphertext through GHASH, and
        ``cryptography`` only does that by decrypting, so this decrypts -- into a per-thread
        scratch buffer reused from call to call. What makes ``open_`` cost ~6x more per byte is
        not AES but the fresh plaintext buffer of every call (large allocations are fresh mmap'd
        pages: a page fault per 4 KiB); tiering checks ~1 GiB of blobs, most of which it packs verbatim.
        """
        self._check_header(blob, aad)
        view = memoryview(blob)
        size = len(view) - OVERHEAD
        decrypt_into = getattr(self._aead, "decrypt_into", None)
        if decrypt_into is None:  # an older cryptography without decrypt_into
            return memoryview(self.open_(blob, aad))
        scratch: bytearray | None = getattr(self._scratch, "buf", None)
        if scratch is None or len(scratch) < size:
            scratch = self._scratch.buf = bytearray(max(size, 1 << 20))
        try:
            decrypt_into(view[1 : 1 + NONCE_BYTES], view[1 + NONCE_BYTES :], aad, memoryview(scratch)[:size])
        except InvalidTag:
            raise self._tampered(aad) from None
        return memoryview(scratch)[:size]
