"""Write the golden chunk stores that pin the on-store format (``tests/unit/test_store_format.py``).

Run from the repository root: ``.venv/bin/python tests/unit/golden/make_chunkstore.py``. It was run
once with the drsvc of commit 1bebca9 (the chunk store as one module, before it became a package)
and its output is checked in: the test reads those bytes with today's code. Regenerating with a
newer drsvc defeats the purpose; do it only when the format changes on purpose (new version,
readers for the old one kept, and a new golden directory beside the old).

Everything is deterministic except what the format makes random (AES-GCM nonces, pack ids): the
key, the chunker parameters and the content, so today's code can recompute the expected chunk ids,
stream hashes and bytes.

- ``hot/``: loose chunks (``chunks/<2 hex>/<id>``), the config written by ``init`` (version 1);
- ``cold/``: packs of blobs and frames with their indexes, config upgraded to version 4 by the
  first pack write;
- both: the manifests of two points of one desktop (the second shares most of its content).
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import blake3

HERE = Path(__file__).resolve().parent
OUT = HERE / "chunkstore-v4"

KEY = blake3.blake3(b"drsvc golden chunk store key").digest()
# Small chunks so a few hundred KiB make many chunks, frames and packs.
PARAMS = {"min_size": 1024, "avg_size": 4096, "max_size": 16384, "normalization": 1}
PACK_SIZE = 48 * 1024
DESKTOP = "golden-desk"
POINTS = ("p1", "p2")


def _text(rng: random.Random, n: int) -> bytes:
    words = [rng.randbytes(rng.randint(2, 9)).hex() for _ in range(300)]
    out = bytearray()
    while len(out) < n:
        out += (" ".join(rng.choice(words) for _ in range(12)) + "\n").encode()
    return bytes(out[:n])


def objects(point: str) -> list[bytes]:
    """The objects of a point's volume: text (framed in packs) and random bytes (blobs), both sizes."""
    rng = random.Random(f"golden {point}")
    base = random.Random("golden base")
    shared = [_text(base, 60_000), base.randbytes(40_000), _text(base, 3_000), base.randbytes(2_500)]
    own = [_text(rng, 20_000), rng.randbytes(9_000)]
    return shared + own if point == "p1" else [*shared[:2], *own, *shared[2:]]


def stream(point: str) -> bytes:
    """The point's second stream (a memory image): one blob of text and random bytes."""
    rng = random.Random(f"golden stream {point}")
    return _text(rng, 30_000) + rng.randbytes(12_000)


def main() -> int:
    from drsvc.backup import chunk_objects
    from drsvc.chunks import ChunkerParams, ChunkStore
    from drsvc.crypto import Keys
    from drsvc.storage.file import FileStore

    if OUT.exists():
        shutil.rmtree(OUT)
    keys = Keys(KEY)
    params = ChunkerParams(**PARAMS)
    hot = ChunkStore.init(FileStore(OUT / "hot"), keys, params=params)
    cold = ChunkStore.init(FileStore(OUT / "cold"), keys, params=params, pack_size=PACK_SIZE)
    for pid in POINTS:
        objs = objects(pid)
        volume = hot.write_objects((len(o), [o]) for o in objs)
        memory = hot.write_stream(stream(pid))
        doc = {
            "point": pid,
            "volume": {"stream": volume.to_dict(), "objects": [{"size": len(o)} for o in objs]},
            "memory": {"stream": memory.to_dict()},
        }
        hot.put_manifest(DESKTOP, pid, doc)
        # Tier the point the way TierJob does: sealed blobs copied, object boundaries for frames.
        ids = [cid for ref in (volume, memory) for cid, _ in ref.chunks]
        object_of = chunk_objects(doc)
        blobs = hot.store.get_many(f"chunks/{cid[:2]}/{cid}" for cid in dict.fromkeys(ids))
        cold.write_packs(((k.rsplit("/", 1)[1], b) for k, b in blobs), object_of=object_of)
        cold.put_manifest(DESKTOP, pid, doc)
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
