"""The object digest alone: CPU seconds per GiB of each form, beside the plain hash functions.

Feeds ``ObjectHasher`` (``drsvc.volumes.base``) the way volume capture does (pieces of ``--piece``
KiB) and reports wall and CPU (user + system of this process) per GiB, for the first form
(blake2b-256), today's (BLAKE3), and BLAKE3 with ``max_threads`` (its own threads, which only
pay where a core is idle). Reference in the same run: ``hashlib.sha256`` and plain blake2b/BLAKE3.
No lab needed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import blake3

from drsvc.volumes.base import BLAKE2B, BLAKE3, ObjectHasher


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(make: Callable[[], Any], piece: bytes, n: int) -> tuple[float, float]:
    wall, used = time.perf_counter(), cpu()
    h = make()
    for _ in range(n):
        h.update(piece)
    h.finish({}, {}) if isinstance(h, ObjectHasher) else h.digest()
    return time.perf_counter() - wall, cpu() - used


class Threads:
    """BLAKE3 with its own threads (``max_threads``) on each large update."""

    def __init__(self, k: int) -> None:
        self.h = blake3.blake3(max_threads=k)

    def update(self, data: bytes) -> None:
        self.h.update(data)

    def digest(self) -> bytes:
        return bytes(self.h.digest())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="bytes hashed per row")
    parser.add_argument("--piece", type=int, default=4096, help="KiB per update (capture hands over 4 MiB)")
    parser.add_argument("--rounds", type=int, default=3, help="best of")
    args = parser.parse_args()
    piece = os.urandom(args.piece * 1024)
    n = max(1, args.mib * 1024 // args.piece)
    gib = n * len(piece) / (1 << 30)

    rows: list[tuple[str, Callable[[], Any]]] = [
        ("object digest, blake2b form (before)", lambda: ObjectHasher(BLAKE2B)),
        ("object digest, BLAKE3 form (today)", lambda: ObjectHasher(BLAKE3)),
        ("  BLAKE3 max_threads=2", lambda: Threads(2)),
        ("  BLAKE3 max_threads=AUTO", lambda: Threads(blake3.blake3.AUTO)),
        ("reference: hashlib.blake2b-256", lambda: hashlib.blake2b(digest_size=32)),
        ("reference: blake3 (1 thread)", lambda: blake3.blake3()),
        ("reference: hashlib.sha256", lambda: hashlib.sha256()),
    ]
    print(f"{gib:.2f} GiB in {args.piece} KiB pieces, best of {args.rounds}; load {os.getloadavg()[0]:.1f}")
    print(f"{'':40s} {'wall s/GiB':>11s} {'cpu s/GiB':>10s}")
    for name, make in rows:
        best = min((timed(make, piece, n) for _ in range(args.rounds)), key=lambda t: t[1])
        print(f"{name:40s} {best[0] / gib:11.3f} {best[1] / gib:10.3f}")


if __name__ == "__main__":
    main()
