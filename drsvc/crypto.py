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

Sealed formats: ``1 | nonce (12) | ciphertext | tag (16)`` for the installation's master key
used as a data key (the fleet scope, and every object written before per-tenant keys), and
``2 | key id (8) | nonce | ciphertext | tag`` for a *tagged* data key (a tenant's, see
``drsvc.chunks.keyring``): the object says which key opens it, so a reader finds the key of a
manifest it did not know the tenant of, and a blob sealed with one key is refused by name when
another is expected. Random nonces are fine up to ~2^32 objects per key (≈1 PiB of 256 KiB chunks).

The key file must be a regular file (not a symlink) owned by the user running drsvc, mode 0600 or
0400: anything else is refused (exit 2) with the command that fixes it.
"""

from __future__ import annotations

import errno
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
SEAL_TAGGED = 2
KEY_ID_BYTES = 8
OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES
TAGGED_OVERHEAD = OVERHEAD + KEY_ID_BYTES
MAX_OVERHEAD = TAGGED_OVERHEAD

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
    """Read and validate a key file; errors name the path and the fix, never the content."""
    return Keys(read_key_file(path))


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte key in a key file: a regular file, not a symlink, owned by this user, 0600/0400."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError as e:
        raise InvalidInput(f"key file {p} does not exist (create one with generate_key_file / drsvc init)") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InvalidInput(
                f"key file {p} is a symlink; keep the key in a regular file at that path "
                f'(cp --remove-destination "$(readlink -f {p})" {p})'
            ) from e
        raise InvalidInput(f"cannot read key file {p}: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)  # of what was opened: no window between the check and the read
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"key file {p} is not a regular file")
        if st.st_uid != os.geteuid():
            raise InvalidInput(f"key file {p} is owned by uid {st.st_uid}, not by this user; chown {os.geteuid()} {p}")
        if st.st_mode & 0o177:
            raise InvalidInput(
                f"key file {p} has mode {stat.S_IMODE(st.st_mode):04o}; only its owner may read it: chmod 600 {p}"
            )
        raw = os.read(fd, 4 * KEY_BYTES)
    finally:
        os.close(fd)
    text = raw.strip()
    if len(text) != 2 * KEY_BYTES:
        raise InvalidInput(f"key file {p} is malformed: expected {2 * KEY_BYTES} hex characters")
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput(f"key file {p} is malformed: expected {2 * KEY_BYTES} hex characters") from None


def _derive(master: bytes, purpose: str) -> bytes:
    return blake3.blake3(master, derive_key_context=_CTX.format(purpose)).digest()


@dataclass(frozen=True, repr=False)
class Keys:
    """A key and its derived subkeys; ``repr`` shows only the public fingerprint.

    The installation's master key is one (the *fleet* key: ``tagged`` false, format-1 seals); a
    tenant's data key is another (``tagged``: format-2 seals that carry its ``fingerprint``).
    """

    master: bytes
    tagged: bool = False
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
        fingerprint = _derive(self.master, "fingerprint")[:KEY_ID_BYTES]
        object.__setattr__(self, "fingerprint", fingerprint.hex())
        object.__setattr__(self, "_cipher", Cipher(self.enc_key, fingerprint if self.tagged else None))

    def __repr__(self) -> str:
        return f"Keys(fingerprint={self.fingerprint}{', tagged' if self.tagged else ''})"

    @classmethod
    def generate(cls, *, tagged: bool = False) -> Keys:
        """A fresh random key (tests, ``init``, a tenant's new data key)."""
        return cls(os.urandom(KEY_BYTES), tagged)

    @property
    def key_id(self) -> str | None:
        """What this key's seals say opens them (None: format 1, the fleet key)."""
        return self.fingerprint if self.tagged else None

    @property
    def overhead(self) -> int:
        """Bytes a seal adds to its plaintext."""
        return TAGGED_OVERHEAD if self.tagged else OVERHEAD

    def derive(self, purpose: str) -> bytes:
        """An independent 32-byte subkey for ``purpose`` (e.g. wrapping data keys)."""
        return _derive(self.master, purpose)

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


def sealed_key_id(blob: bytes | memoryview) -> str | None:
    """The key id a sealed object names (format 2), or None (format 1: the fleet key)."""
    if len(blob) >= TAGGED_OVERHEAD and blob[0] == SEAL_TAGGED:
        return bytes(blob[1 : 1 + KEY_ID_BYTES]).hex()
    return None


class Cipher:
    """AES-256-GCM with random nonces and the object's role/key as associated data.

    With a ``key_id`` it writes format 2 (the id in the header) and opens only format-2 objects
    naming that id; without, format 1 only. A mismatch is an ``IntegrityError`` naming both keys.
    """

    def __init__(self, enc_key: bytes, key_id: bytes | None = None) -> None:
        self._aead = AESGCM(enc_key)
        self._key_id = key_id
        self._header = bytes([SEAL_TAGGED]) + key_id if key_id else bytes([SEAL_VERSION])
        self._scratch = threading.local()  # verify's reusable plaintext buffer, one per thread

    def seal(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` bound to ``aad``."""
        nonce = os.urandom(NONCE_BYTES)
        return self._header + nonce + self._aead.encrypt(nonce, bytes(plaintext), aad)

    def _check_header(self, blob: bytes | memoryview, aad: bytes) -> int:
        """Where the nonce starts, after checking the header is this key's."""
        what = aad.decode("utf-8", "replace")
        if len(blob) < len(self._header) + NONCE_BYTES + TAG_BYTES:
            raise IntegrityError(f"{what}: sealed object truncated ({len(blob)} bytes)")
        version = blob[0]
        if version not in (SEAL_VERSION, SEAL_TAGGED):
            raise IntegrityError(f"{what}: unknown sealed format version {version}")
        named = bytes(blob[1 : 1 + KEY_ID_BYTES]).hex() if version == SEAL_TAGGED else "the fleet key"
        mine = self._key_id.hex() if self._key_id else "the fleet key"
        if named != mine:
            raise IntegrityError(f"{what}: sealed with key {named}, not with {mine} (another tenant's or misplaced)")
        return len(self._header)

    @staticmethod
    def _tampered(aad: bytes) -> IntegrityError:
        return IntegrityError(
            f"{aad.decode('utf-8', 'replace')}: authentication failed "
            "(tampered, corrupted, misplaced or sealed with another key)"
        )

    def open_(self, blob: bytes | memoryview, aad: bytes) -> bytes:
        """Authenticate and decrypt ``blob`` sealed for ``aad``; raise ``IntegrityError`` on any tampering."""
        at = self._check_header(blob, aad)
        try:
            return self._aead.decrypt(blob[at : at + NONCE_BYTES], blob[at + NONCE_BYTES :], aad)
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
        at = self._check_header(blob, aad)
        view = memoryview(blob)
        size = len(view) - at - NONCE_BYTES - TAG_BYTES
        decrypt_into = getattr(self._aead, "decrypt_into", None)
        if decrypt_into is None:  # an older cryptography without decrypt_into
            return memoryview(self.open_(blob, aad))
        scratch: bytearray | None = getattr(self._scratch, "buf", None)
        if scratch is None or len(scratch) < size:
            scratch = self._scratch.buf = bytearray(max(size, 1 << 20))
        try:
            decrypt_into(view[at : at + NONCE_BYTES], view[at + NONCE_BYTES :], aad, memoryview(scratch)[:size])
        except InvalidTag:
            raise self._tampered(aad) from None
        return memoryview(scratch)[:size]
