"""The cold tier's encoding: frames compressed again vs the hot chunks packed verbatim (no lab).

The mixed desktop set of ``bench/tiering.py`` (what ``bench/e2e.py`` and ``bench/incremental.py``
put on a lab volume) and, with ``--fleet``, its fleet of desktops cloned from one base, are written
into a hot chunk store at each ``--hot`` level (what ``backup`` does: ``write_objects``, objects
aligned) and then packed into a cold store two ways (what ``tier`` does: ``write_packs`` with the
chunks' objects, ``object_of``):

- ``frames``: today's default, ``[cold] recompress = true``: each compressible hot chunk is
  authenticated, decompressed and compressed again with its neighbours in frames of 1-4 MiB at
  ``[cold] zstd_level`` (``--cold``);
- ``verbatim``: ``[cold] recompress = false``: each hot chunk authenticated and packed as the hot
  store holds it.

Both stores are local directories (``file://`` on tmpfs, no fsync), so the numbers are the
encoding's alone: bytes stored (packs + indexes) and this process's CPU seconds (all threads) to
write the hot store and to pack. restic's size for the same data is not measured here (it needs
the lab's radosgw); ``bench/tiering.py`` and ``bench/fleet_dedup.py`` print it.

    .venv/bin/python bench/cold_encoding.py --mib 1024 --hot 1 3     # ~3 min on 2 cores
    .venv/bin/python bench/cold_encoding.py --mib 0 --fleet 10 --fleet-mib 100 --chunk-kib 128 512
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from _lab import MiB
from tiering import files_of, make_desktop

from drsvc.chunks import ChunkStore, StreamRef
from drsvc.chunks.cutter import ChunkerParams
from drsvc.point_manifest import chunk_objects
from drsvc.storage.file import FileStore


def stored(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def pieces(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [data[i : i + 8 * MiB] for i in range(0, len(data), 8 * MiB)] or [b""]


def ingest(hot: ChunkStore, desks: list[Path]) -> tuple[list[StreamRef], list[list[int]]]:
    """Each desktop as one stream of its files (as backup writes a volume); refs and object sizes."""
    refs, sizes = [], []
    for root in desks:
        files = files_of(root)
        sizes.append([p.stat().st_size for p in files])
        refs.append(hot.write_objects((p.stat().st_size, pieces(p)) for p in files))
    return refs, sizes


def object_of(refs: list[StreamRef], sizes: list[list[int]]) -> tuple[list[str], dict[str, object]]:
    """The chunks in first-use order and the object each lies within (what tiering passes)."""
    order: dict[str, None] = {}
    where: dict[str, object] = {}
    for n, (ref, objs) in enumerate(zip(refs, sizes, strict=True)):
        manifest = {"volume": {"objects": [{"size": s} for s in objs], "stream": ref.to_dict()}}
        for cid, obj in chunk_objects(manifest).items():
            where.setdefault(cid, (n, obj))
        order.update((cid, None) for cid, _ in ref.chunks)
    return list(order), where


def run(
    label: str, desks: list[Path], data_bytes: int, hot_levels: list[int], cold_level: int, chunk_kib: int, tmp: Path
) -> None:
    key = os.urandom(32)
    params = ChunkerParams.for_average(chunk_kib)
    print(f"\n{label}: {data_bytes / MiB:.0f} MiB in {len(desks)} desktop(s), {chunk_kib} KiB average chunks")
    head = [("hot level", 10), ("encoding", 18), ("stored MiB", 11), ("vs frames", 12)]
    print(" ".join(f"{name:>{width}}" for name, width in [*head, ("hot CPU s", 10), ("pack CPU s", 11)]))
    base: float | None = None
    for level in hot_levels:
        hot_dir = tmp / f"hot{level}"
        hot = ChunkStore.init(FileStore(hot_dir, fsync=False), key, level=level, params=params)
        c0 = time.process_time()
        refs, sizes = ingest(hot, desks)
        hot_cpu = time.process_time() - c0
        ids, where = object_of(refs, sizes)
        ways = [("frames", True), ("verbatim", False)] if level == hot_levels[0] else [("verbatim", False)]
        for name, recompress in ways:
            cold_dir = tmp / f"cold{level}-{name}"
            cold = ChunkStore.init(
                FileStore(cold_dir, fsync=False),
                key,
                level=cold_level,
                recompress=recompress,
                pack_size=16 * MiB,
                params=params,
            )
            c0 = time.process_time()
            cold.write_packs(hot.sealed_chunks(ids), object_of=where)
            pack_cpu = time.process_time() - c0
            size = stored(cold_dir / "packs") + stored(cold_dir / "index")
            if base is None:
                base = size
            what = f"{name}" + (f" (zstd {cold_level})" if recompress else "")
            print(
                f"{level:>10} {what:>18} {size / MiB:11.2f} {size / base - 1:+12.2%} {hot_cpu:10.2f} {pack_cpu:11.2f}",
                flush=True,
            )
            shutil.rmtree(cold_dir)
        print(f"{'':>10} {'hot store itself':>18} {stored(hot_dir / 'chunks') / MiB:11.2f}")
        shutil.rmtree(hot_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=float, default=1024, help="mixed set size (0: skip it)")
    ap.add_argument("--seed", type=int, default=7, help="bench/e2e.py's default seed")
    ap.add_argument("--hot", type=int, nargs="+", default=[1, 3], help="hot zstd levels (frames from the first)")
    ap.add_argument("--cold", type=int, default=4, help="[cold] zstd_level of the frames")
    ap.add_argument("--chunk-kib", type=int, nargs="+", default=[128], help="[hot] chunk_kib (average chunk size)")
    ap.add_argument("--fleet", type=int, default=0, help="desktops in the fleet set (0: skip it)")
    ap.add_argument("--fleet-mib", type=int, default=100)
    ap.add_argument("--fleet-shared", type=float, default=0.7)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="drsvc-cold-encoding-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        if args.mib:
            src = tmp / "src"
            written = make_desktop(src, args.mib, args.seed)
            for kib in args.chunk_kib:
                run(f"mixed set (seed {args.seed})", [src], written, args.hot, args.cold, kib, tmp)
            shutil.rmtree(src)
        if args.fleet:
            base = tmp / "base-src"
            make_desktop(base, args.fleet_mib, seed=500)
            desks = []
            for i in range(args.fleet):
                d = tmp / "desks" / f"f{i:02d}"
                make_desktop(d, args.fleet_mib, seed=600 + i, shared=base, shared_frac=args.fleet_shared)
                desks.append(d)
            shutil.rmtree(base)
            total = sum(p.stat().st_size for d in desks for p in files_of(d))
            label = f"fleet {args.fleet} x {args.fleet_mib} MiB, {args.fleet_shared:.0%} shared, one key"
            for kib in args.chunk_kib:
                run(label, desks, total, args.hot, args.cold, kib, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
