"""What a clone restore's writer mark costs: fresh writes with and without it, the unmark pass, raw librados.

A clone restore into an empty namespace creates each object with the xattr ``drsvc.restore-writer``
in the op that creates it (what cleanup after a kill -9 checks), records that the volume is
written, and takes the marks off (one pipelined rmxattr per object; drsvc/volumes/rados_removal.py).
Each round writes the same N objects of SIZE bytes into an empty namespace four ways, alternating,
on the same pool: raw librados (the reference: ``aio_write_full`` + ``aio_setxattr`` through a
window of 64, what any writer pays), drsvc unmarked, drsvc marked, and the unmark pass alone.

    eval "$(dev/lab env)"; .venv/bin/python bench/writer_marks.py [--objects 2000] [--size 16384] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import _lab  # noqa: F401  (the checkout first on sys.path)

from drsvc import ceph
from drsvc.volumes.base import VolumeObject
from drsvc.volumes.rados import from_url

POOL = "desktops"


def objects(n: int, data: bytes) -> Iterator[tuple[VolumeObject, Iterator[bytes]]]:
    for i in range(n):
        yield VolumeObject(f"obj-{i:06d}", len(data), {"user.a": b"x"}, {}), iter([data])


def raw(io: Any, n: int, data: bytes, window: int = 64) -> None:
    """The reference: librados aio writes (data, then the xattr), ``window`` objects in flight."""
    inflight: collections.deque[Any] = collections.deque()
    for i in range(n):
        name = f"obj-{i:06d}"
        inflight.append(io.aio_write_full(name, data))
        inflight.append(io.aio_setxattr(name, "user.a", b"x"))
        while len(inflight) >= 2 * window:
            ceph.wait(inflight.popleft())
    while inflight:
        ceph.wait(inflight.popleft())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    conf = {"conffile": os.environ.get("CEPH_CONF"), "keyring": os.environ.get("CEPH_KEYRING")}
    data = os.urandom(args.size)
    namespace = f"writermarks-{os.getpid()}"
    volume = from_url(f"rados://{POOL}/{namespace}", **conf)
    io = ceph.open_ioctx(ceph.cluster(**conf), POOL)
    io.set_namespace(namespace)
    names = [f"obj-{i:06d}" for i in range(args.objects)]
    took: dict[str, list[float]] = collections.defaultdict(list)
    try:
        for _ in range(args.rounds):
            for way in ("librados", "drsvc", "drsvc marked"):
                volume.purge()
                t = time.monotonic()
                if way == "librados":
                    raw(io, args.objects, data)
                else:
                    volume.write_objects(
                        objects(args.objects, data), fresh=True, mark="bench" if "marked" in way else None
                    )
                took[way].append(time.monotonic() - t)
                if way == "drsvc marked":
                    t = time.monotonic()
                    assert volume.unmark(names) == args.objects
                    took["unmark pass"].append(time.monotonic() - t)
    finally:
        volume.purge()
        io.close()
        volume.close()
    print(f"{args.objects} objects of {args.size} B into an empty namespace, {args.rounds} rounds (median, all):")
    for way, values in took.items():
        print(f"  {way:14} {statistics.median(values):6.2f} s   " + " ".join(f"{v:.2f}" for v in values))
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
