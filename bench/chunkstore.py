"""Chunk store throughput against the raw object-store ceiling.

Writes a deterministic mixed data set (per desktop: a shared base image with a few scattered
small overwrites, compressible logs, incompressible "media") through the chunk store, and the
same bytes as plain 4 MiB objects with pipelined librados ``aio_write_full`` (the ceiling), then
reads both back. Prints MiB/s, chunk count and dedup; removes everything it wrote.

    eval "$(dev/lab env)"; python3 bench/chunkstore.py --mib 1024
    python3 bench/chunkstore.py --url file:///tmp/bench --mib 256      # without the lab
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections.abc import Iterator

import blake3
from _lab import MiB

from drsvc.chunks import ChunkerParams, ChunkStore, WriteStats
from drsvc.crypto import Keys
from drsvc.storage import ObjectStore, open_store


def media(n: int, seed: str) -> bytes:
    """Incompressible bytes (BLAKE3 XOF), deterministic."""
    return blake3.blake3(seed.encode()).digest(length=n)


def logs(n: int, seed: int) -> bytes:
    """Compressible log lines drawn from a vocabulary, deterministic."""
    rng = random.Random(seed)
    vocab = [
        f"2024-06-{d:02d}T{h:02d}:{m:02d}:00Z INFO svc={s} path=/api/v1/{p} status={st} ms={{}} req={{}}\n"
        for d, h, m, s, p, st in (
            (
                rng.randrange(1, 29),
                rng.randrange(24),
                rng.randrange(60),
                rng.choice("abcdef"),
                rng.choice(["users", "files", "auth", "sync"]),
                rng.choice([200, 200, 200, 304, 404, 500]),
            )
            for _ in range(2000)
        )
    ]
    out, size = [], 0
    while size < n:
        line = rng.choice(vocab).format(rng.randrange(900), rng.randrange(10**9))
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def dataset(total_mib: int, desktops: int) -> list[bytes]:
    """One stream per desktop: 40 % shared base (+ small overwrites), 30 % logs, 30 % media."""
    per = total_mib * MiB // desktops
    base_len, log_len = per * 4 // 10, per * 3 // 10
    base = bytearray(media(base_len // 2, "base") + logs(base_len - base_len // 2, 0))
    streams = []
    for d in range(desktops):
        rng = random.Random(100 + d)
        mine = bytearray(base)
        for _ in range(8):  # scattered small writes into the "image"
            off = rng.randrange(len(mine) - 4096)
            mine[off : off + 4096] = media(4096, f"patch{d}-{off}")
        streams.append(bytes(mine) + logs(log_len, d + 1) + media(per - base_len - log_len, f"media{d}"))
    return streams


def pieces(data: bytes, size: int = 4 * MiB) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield view[i : i + size].tobytes()


def purge(store: ObjectStore) -> int:
    return store.delete_many(list(store.list()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024, help="data set size in MiB (default 1024)")
    ap.add_argument("--desktops", type=int, default=4, help="streams sharing a base image (default 4)")
    ap.add_argument("--url", default="rados://drsvc-hot", help="store URL root (default rados://drsvc-hot)")
    ap.add_argument("--workers", type=int, default=2, help="chunk store encode/decode threads (default 2)")
    ap.add_argument("--avg-kib", type=int, default=128, help="FastCDC average size (min = avg/4, max = avg*4)")
    ap.add_argument("--keep", action="store_true", help="do not delete what was written")
    args = ap.parse_args()

    t = time.perf_counter()
    streams = dataset(args.mib, args.desktops)
    total = sum(map(len, streams))
    print(f"data set: {total / MiB:.0f} MiB in {len(streams)} streams (generated in {time.perf_counter() - t:.1f} s)")

    run = f"bench-{uuid.uuid4().hex[:8]}"
    cs_store = open_store(f"{args.url.rstrip('/')}/{run}/chunks")
    raw_store = open_store(f"{args.url.rstrip('/')}/{run}/raw")
    avg = args.avg_kib * 1024
    params = ChunkerParams(min_size=avg // 4, avg_size=avg, max_size=avg * 4)
    try:
        # ceiling: the same bytes as 4 MiB objects, pipelined
        t = time.perf_counter()
        n_raw = raw_store.put_many(
            (f"s{i}/{j:06d}", piece) for i, s in enumerate(streams) for j, piece in enumerate(pieces(s))
        )
        raw_w = time.perf_counter() - t
        t = time.perf_counter()
        raw_read = sum(len(d) for _, d in raw_store.get_many(sorted(raw_store.list())))
        raw_r = time.perf_counter() - t
        assert raw_read == total

        cs = ChunkStore.init(cs_store, Keys.generate(), params=params, workers=args.workers)
        stats = WriteStats()
        refs = []
        t = time.perf_counter()
        for s in streams:
            ref = cs.write_stream(pieces(s))
            stats.add(ref.stats)
            refs.append(ref)
        cs_w = time.perf_counter() - t
        t = time.perf_counter()
        got = 0
        for s, ref in zip(streams, refs, strict=True):
            h = blake3.blake3()
            for part in cs.read_stream(ref):
                h.update(part)
                got += len(part)
            assert h.digest() == blake3.blake3(s).digest()
        cs_r = time.perf_counter() - t
        assert got == total

        mib = total / MiB
        print(
            f"store: {args.url}/{run}  workers={args.workers}  chunker min/avg/max = "
            f"{params.min_size // 1024}/{params.avg_size // 1024}/{params.max_size // 1024} KiB"
        )
        print(f"raw 4 MiB objects : write {mib / raw_w:7.1f} MiB/s   read {mib / raw_r:7.1f} MiB/s   ({n_raw} objects)")
        print(
            f"chunk store       : write {mib / cs_w:7.1f} MiB/s   read {mib / cs_r:7.1f} MiB/s   "
            f"(decrypt + verify + decompress)"
        )
        print(
            f"chunks: {stats.chunks_total} total, {stats.chunks_new} new "
            f"(avg {total / max(1, stats.chunks_total) / 1024:.0f} KiB); stored "
            f"{stats.bytes_new_stored / MiB:.0f} MiB of {mib:.0f} MiB -> "
            f"dedup+compression ratio {stats.dedup_ratio:.2f}x "
            f"(dedup alone {stats.chunks_total / max(1, stats.chunks_new):.2f}x by chunk count)"
        )
    finally:
        if not args.keep:
            removed = purge(cs_store) + purge(raw_store)
            print(f"cleaned up {removed} objects")
        cs_store.close()
        raw_store.close()


if __name__ == "__main__":
    main()
