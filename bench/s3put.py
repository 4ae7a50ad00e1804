"""CPU per uploaded GiB: 16 MiB pack PUTs through ``S3Store.put`` beside raw boto3, on the lab's radosgw.

What the cold tier's pack writer does, alone: ``--mib`` of incompressible 16 MiB packs, each a
memoryview over a reused bytearray, handed to ``S3Store.put`` from ``--workers`` threads. Every
variant runs in a process of its own (its own imports, a fresh client) and reports its wall time
and its own CPU seconds (user + system) for the puts alone, and the CPU the primary radosgw spent
meanwhile (``/proc/<pid>/stat``: the lab's radosgw runs on this machine, so its work is wall time
here too). Variants (``--variant``, repeatable; all by default), taking turns round after round:

- ``this``: ``S3Store`` of this tree.
- ``before``: ``S3Store`` of the tree given with ``--before DIR`` (``PYTHONPATH=DIR``).
- ``boto3``: the reference, raw ``put_object(Body=bytes)`` with boto3's defaults (payload signed
  on a plain-HTTP endpoint, and a CRC32 the SDK computes).
- ``floor``: raw ``put_object`` with no checksum at all (``request_checksum_calculation =
  "when_required"``, unsigned payload): what a PUT costs without any body check, for reference.
- ``crc32`` / ``md5``: raw ``put_object``, unsigned, the body sent as one view (no copy) with a
  CRC32 header / Content-MD5 computed in one call: the other checksums drsvc could send. radosgw
  16 (the lab) verifies Content-MD5 but ignores x-amz-checksum-crc32; AWS S3 verifies both.

    eval "$(dev/lab env)"
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/s3put.py --mib 1024 --rounds 2 --before /tmp/before

``--profile N`` instead runs N puts of variant ``this`` on one thread under cProfile and prints
where the CPU went. The bucket is removed at the end. Compare the columns of one run: the machine
is shared.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
ENDPOINT = os.environ.get("S3_ENDPOINT_URL", "http://127.0.0.1:7480")
PACK = 16 * MiB
VARIANTS = ("this", "before", "boto3", "floor", "crc32", "md5")
TICK = os.sysconf("SC_CLK_TCK")


def rgw_pid() -> int | None:
    """The primary radosgw (``client.rgw.a``) of the lab, or None when it is not on this machine."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"radosgw") and b"client.rgw.a" in cmd:
                return int(entry.name)
    return None


def cpu_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# ---------------------------------------------------------------------- one variant, in its own process


def putter(variant: str, bucket: str) -> Any:
    """A function ``put(key, view)`` for the variant (the store or client made here, not timed)."""
    if variant in ("this", "before"):
        from drsvc.storage.s3 import S3Store

        store = S3Store(bucket, f"{variant}-{uuid.uuid4().hex[:6]}", endpoint_url=ENDPOINT, create=False)
        return store.put
    import boto3
    from botocore.config import Config

    config = Config(max_pool_connections=16)
    if variant == "floor":
        config = Config(
            max_pool_connections=16, request_checksum_calculation="when_required", s3={"payload_signing_enabled": False}
        )
    if variant in ("crc32", "md5"):
        return raw_checksummed(variant, bucket)
    client = boto3.client("s3", endpoint_url=ENDPOINT, config=config)
    prefix = f"{variant}-{uuid.uuid4().hex[:6]}/"
    return lambda key, view: client.put_object(Bucket=bucket, Key=prefix + key, Body=bytes(view))


def raw_checksummed(variant: str, bucket: str) -> Any:
    """Raw ``put_object``, unsigned, the body's CRC32 or MD5 computed in one call and sent as a view."""
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=16, request_checksum_calculation="when_required", s3={"payload_signing_enabled": False}
    )
    client: Any = boto3.client("s3", endpoint_url=ENDPOINT, config=config)

    class View(io.RawIOBase):  # passes botocore's check for a body, then swapped for the view itself
        def __init__(self, view: memoryview) -> None:
            self.view = view

        def readable(self) -> bool:
            return True

    def swap(params: dict[str, Any], **_: Any) -> None:
        if isinstance(params.get("body"), View):
            params["body"] = params["body"].view

    client.meta.events.register_first("before-call.s3.PutObject", swap)

    def put(key: str, view: memoryview) -> Any:
        if variant == "crc32":
            extra = {"ChecksumCRC32": base64.b64encode(zlib.crc32(view).to_bytes(4, "big")).decode()}
        else:
            extra = {"ContentMD5": base64.b64encode(hashlib.md5(view).digest()).decode()}
        return client.put_object(Bucket=bucket, Key=f"{variant}/{key}", Body=View(view), **extra)

    return put


def child(args: argparse.Namespace) -> None:
    put = putter(args.child, args.bucket)
    count = max(1, args.mib * MiB // PACK)
    buffers = [bytearray(os.urandom(PACK)) for _ in range(args.workers + 1)]
    put("warm", memoryview(buffers[0]))  # the connection and the first request's lazy imports
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.profile):
            put(f"p{i}", memoryview(buffers[i % len(buffers)]))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    t0, c0 = time.perf_counter(), os.times()
    with ThreadPoolExecutor(args.workers) as pool:
        for f in [pool.submit(put, f"k{i}", memoryview(buffers[i % len(buffers)])) for i in range(count)]:
            f.result()
    c1 = os.times()
    out = {
        "wall": time.perf_counter() - t0,
        "cpu": (c1.user - c0.user) + (c1.system - c0.system),
        "gib": count * PACK / 2**30,
    }
    print(json.dumps(out))


# ---------------------------------------------------------------------- the parent


def run_variant(variant: str, bucket: str, args: argparse.Namespace, rgw: int | None) -> dict[str, float]:
    env_ = dict(os.environ)
    tree = args.before if variant == "before" else str(ROOT)
    env_["PYTHONPATH"] = tree
    cmd = [sys.executable, __file__, "--child", variant, "--bucket", bucket]
    cmd += ["--mib", str(args.mib), "--workers", str(args.workers)]
    r0 = cpu_of(rgw)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env_, cwd=tree)
    if p.returncode != 0:
        raise SystemExit(f"{variant}: exit {p.returncode}: {p.stderr[-2000:]}")
    out: dict[str, float] = json.loads(p.stdout.strip().splitlines()[-1])
    out["rgw"] = cpu_of(rgw) - r0
    return out


def empty_bucket(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="MiB uploaded per variant and round (16 MiB packs)")
    ap.add_argument("--workers", type=int, default=4, help="upload threads (the pack writer's upload_workers)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before", help="another drsvc tree to run as variant 'before'")
    ap.add_argument("--variant", action="append", choices=VARIANTS, help="run only these (repeatable)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile N puts of 'this' on one thread")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--bucket", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    # the parent only: _lab puts this tree first on sys.path, which a 'before' child must not get
    from _lab import byte_compile, env

    env("S3_ENDPOINT_URL")
    if args.before:
        byte_compile(Path(args.before))
    import boto3

    client = boto3.client("s3", endpoint_url=ENDPOINT)
    bucket = f"drsvc-bench-s3put-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    try:
        if args.profile:
            env_ = dict(os.environ, PYTHONPATH=str(ROOT))
            cmd = [sys.executable, __file__, "--child", "this", "--bucket", bucket, "--profile", str(args.profile)]
            subprocess.run(cmd, env=env_, check=True)
            return
        variants = [v for v in (args.variant or VARIANTS) if v != "before" or args.before]
        rgw = rgw_pid()
        rows: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        print(
            f"{args.mib} MiB in 16 MiB PUTs on {args.workers} threads, {args.rounds} rounds; "
            f"load {os.getloadavg()[0]:.1f}"
        )
        for r in range(args.rounds):
            for v in variants:
                out = run_variant(v, bucket, args, rgw)
                rows[v].append(out)
                g = out["gib"]
                print(
                    f"round {r + 1} {v:7} wall {out['wall'] / g:5.2f} s/GiB  CPU {out['cpu'] / g:5.2f} s/GiB  "
                    f"radosgw CPU {out['rgw'] / g:5.2f} s/GiB",
                    flush=True,
                )
                empty_bucket(client, bucket)
        print("best of rounds (per GiB):")
        for v, outs in rows.items():
            best = min(outs, key=lambda o: o["cpu"])
            g = best["gib"]
            print(
                f"  {v:7} wall {min(o['wall'] for o in outs) / g:5.2f} s  CPU {best['cpu'] / g:5.2f} s  "
                f"radosgw {best['rgw'] / g:5.2f} s"
            )
    finally:
        empty_bucket(client, bucket)
        client.delete_bucket(Bucket=bucket)


if __name__ == "__main__":
    main()
