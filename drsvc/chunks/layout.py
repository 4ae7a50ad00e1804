"""Where things lie in a chunk store: object keys, what seals them, and the sizes the format fixes.

Layout (DESIGN.md "Storage format")::

    config                          JSON: format, version, key fingerprint, and sealed(settings: chunker
                                    parameters, codec, cipher, ``packs``/``frames`` of a packed store);
                                    versions 1-4 kept the settings in plaintext (``drsvc.chunks.config``)
    chunks/<2 hex>/<id>             sealed(codec byte + zstd or raw chunk); id = keyed BLAKE3 of the plaintext
    packs/<2 hex>/<pack-id>         packed stores (the cold tier): sealed chunk blobs and frames, concatenated
    index/<pack-id>                 sealed(zstd(JSON)): chunk id -> (offset, length[, position, size]) list
    manifests/<desktop>/<point-id>  sealed(zstd(JSON document))
    keys/<key id>, keys/current/<t>  a tenant's data key wrapped by the key provider; its current key (``keyring``)

Objects are sealed with the fleet key (format 1) or a tenant's data key (format 2, naming the key:
``drsvc.crypto``). Every sealed object carries ``b"drsvc/" + its key`` as associated data (``object_aad``), so no
object can stand in for another (a manifest for a chunk, chunk A for chunk B); a frame is sealed
for its place in its pack (``frame_name``).
"""

from __future__ import annotations

from drsvc.crypto import MAX_OVERHEAD
from drsvc.errors import InvalidInput
from drsvc.storage.base import check_key

KiB = 1024
MiB = 1024 * KiB

FORMAT = "drsvc-chunkstore"
# 1: loose chunks; 2: packs; 3: frames in packs; 4: frames up to FRAME_MAX (version 3 readers stop at 1 MiB + a
# chunk); 5: the config sealed (``config``). A store is upgraded to 5 by its next write.
FORMAT_VERSION = 5
CONFIG_KEY = "config"
CHUNKS_PREFIX = "chunks/"
PACKS_PREFIX = "packs/"
INDEX_PREFIX = "index/"
MANIFESTS_PREFIX = "manifests/"
KEYS_PREFIX = "keys/"
PACK_SIZE = 16 * MiB  # default pack size: one PutObject (below the S3 store's multipart threshold)
PACK_MAX = 1024 * MiB  # largest pack size a config may name
MAX_RANGE = 16 * MiB  # largest ranged GET when reading packs (a whole default pack)
MAX_GAP = 256 * KiB  # bytes of unneeded chunks read through rather than starting a new range
FRAME_SIZE = 1 * MiB  # a frame closes once it holds this much plaintext and the next chunk starts another object
FRAME_MAX = 4 * MiB  # ... and at this much in any case (an object larger than that spans frames)
BLOCK_SIZE = 8 * MiB  # read size of write_stream; the carried tail is at most one max-size chunk

# What a reader accepts of each kind of object (what a store holds is hostile input): the stored
# size is checked before an object is read (``ObjectStore.get(max_size=)``), the size a zstd frame
# declares before it is decompressed. Chunks and frames are bounded by the chunker's ``max_size``
# (``Limits``); documents by these constants.
CONFIG_MAX = 64 * KiB  # the config object (a few hundred bytes)
# A manifest as stored: ~1 MiB per GiB of a volume of 5,000 files; the RADOS hot store takes no
# object above 90 MiB (rados.MAX_OBJECT_BYTES), so no manifest drsvc wrote is larger.
MANIFEST_STORED_MAX = 96 * MiB
MANIFEST_MAX = 384 * MiB  # ... and its JSON, decompressed
INDEX_STORED_MAX = 16 * MiB  # a pack index as stored (~50 KiB for a 16 MiB pack)
INDEX_MAX = 64 * MiB  # ... and its JSON
KEY_RECORD_MAX = 64 * KiB  # a sealed key record

_HEX = frozenset("0123456789abcdef")


def chunk_stored_max(max_chunk: int) -> int:
    """Largest sealed chunk (a loose object, or a blob in a pack): the codec byte, raw, sealed."""
    return max_chunk + 1 + MAX_OVERHEAD


def frame_plain_max(max_chunk: int) -> int:
    """Largest frame plaintext: ``FRAME_MAX`` and the chunk that crossed it."""
    return FRAME_MAX + max_chunk


def frame_stored_max(max_chunk: int) -> int:
    """Largest sealed frame."""
    return frame_plain_max(max_chunk) + 1 + MAX_OVERHEAD


def is_id(cid: str) -> bool:
    """Whether ``cid`` is a well-formed chunk id (64 lowercase hex)."""
    return len(cid) == 64 and set(cid) <= _HEX


def is_key_id(kid: str) -> bool:
    """Whether ``kid`` is a well-formed data key id (16 lowercase hex)."""
    return len(kid) == 16 and set(kid) <= _HEX


def is_pack_id(pid: str) -> bool:
    """Whether ``pid`` is a well-formed pack id (32 lowercase hex)."""
    return len(pid) == 32 and set(pid) <= _HEX


def chunk_key(cid: str) -> str:
    """Object key of a chunk id."""
    return f"{CHUNKS_PREFIX}{cid[:2]}/{cid}"


def pack_key(pack_id: str) -> str:
    """Object key of a pack."""
    return f"{PACKS_PREFIX}{pack_id[:2]}/{pack_id}"


def index_key(pack_id: str) -> str:
    """Object key of a pack's index."""
    return f"{INDEX_PREFIX}{pack_id}"


def frame_name(pack_id: str, offset: int) -> str:
    """What a frame is sealed for (its associated data): its place, so no frame can stand in for another."""
    return f"{pack_key(pack_id)}@{offset}"


def object_aad(key: str) -> bytes:
    """Associated data binding a sealed object to its key (no object can stand in for another)."""
    return b"drsvc/" + key.encode()


def segment(what: str, value: str) -> str:
    """``value`` if it can be one segment of a key (a desktop, a point id), else ``InvalidInput``."""
    if "/" in value:
        raise InvalidInput(f"invalid {what} {value!r}: must not contain '/'")
    check_key(value)
    return value
