"""Backups that cost what changed: ``drsvc backup`` + ``drsvc tier`` vs ``restic backup``, end to end.

Through the real CLI (``drsvc`` in its own process: what a user or the cron minute waits for), on
the lab, beside restic in the same run, on the same files:

1. A lab desktop (``dev/lab fleet``, busybox, checkpointed with CRIU as a policy backup does) gets
   the mixed desktop data set of ``bench/tiering.py`` (base image, media, logs, thousands of small
   files) as RADOS objects in its namespace; the same files lie in tmpfs for restic.
2. First backup: ``drsvc backup`` (a full read: no parent) + ``drsvc tier`` (to S3 on radosgw),
   beside ``restic backup`` into an empty repository on the same radosgw.
3. Nothing changed, ``--rounds`` times: drsvc incremental (the default), drsvc with
   ``capture.full_every: 1`` (every backup reads the whole volume, as before incremental capture),
   and restic.
4. A 2 % scattered change (64 KiB overwrites at random places in the larger files, the same bytes
   in RADOS and in tmpfs), ``--rounds`` times: drsvc incremental and restic; stored growth is the
   cold bucket's (drsvc) and the repository bucket's (restic).

drsvc's columns say how many object bytes the backup read from the pool snapshot and the hot
store (the manifest's ``volume.capture``). ``tier`` waits out the policy's ``after: 1s`` before
it runs (not timed). Every round also times a raw ``podman container checkpoint --leave-running``
of the same container (``checkpoint``: the CRIU floor no backup of a running desktop avoids on a
kernel without soft-dirty tracking); ``backup-ckpt`` is drsvc's backup step minus that floor.

``--before DIR`` (repeatable) adds a build: the drsvc tree in DIR (e.g. ``git archive REV drsvc |
tar -x -C DIR``), run with this venv's interpreter and ``PYTHONPATH=DIR``, with its own catalog,
hot prefix and bucket; builds take turns on the same desktop in every round. ``--no-full`` skips
the full-read rows (each costs a whole read per round). ``--chunk-kib N`` (repeatable) adds a build
of this tree whose hot store is made with ``[hot] chunk_kib = N`` (``kibN``; the cold store takes
its parameters): the average chunk size's trade, beside the default's (128 KiB) in the same run;
every build's hot store object count is printed at the end. ``--pool-objects N`` first puts N
empty objects in the hot pool under a prefix of the bench's own, as a fleet's hot pool holds every
other desktop's chunks (a RADOS listing reads the whole pool, whatever the prefix); ``--phases``
prints each drsvc backup's phase seconds (``drsvc --json backup``'s ``phases``).

    eval "$(dev/lab env)"; flock /tmp/drsvc-lab.lock .venv/bin/python bench/incremental.py [--mib 1024 --rounds 3]
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/incremental.py --mib 512 --rounds 2 --no-full --before /tmp/before

Everything it creates (desktop, namespace, pool snapshots, hot prefix, buckets, temp dirs) is
removed at the end. Numbers are noisy on a shared 2-core machine: compare the columns of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from _lab import ENDPOINT, ROOT, MiB, byte_compile, config_text, env, reference_tool, run, show_medians
from chunkstore import media
from tiering import bucket_bytes, files_of, make_desktop

from drsvc.catalog import Catalog
from drsvc.config import load_config
from drsvc.crypto import generate_key_file
from drsvc.services import Services

WRITE = 64 * 1024  # one scattered overwrite
PYTHON = str(ROOT / ".venv" / "bin" / "python")


def scatter(root: Path, fraction: float, seed: int) -> dict[str, list[tuple[int, bytes]]]:
    """``fraction`` of all bytes overwritten in place, 64 KiB at a time at random places; the writes by file."""
    rng = random.Random(seed)
    files = [(p, p.stat().st_size) for p in files_of(root)]
    big = [(p, s) for p, s in files if s > WRITE]
    goal = int(sum(s for _, s in files) * fraction)
    writes: dict[str, list[tuple[int, bytes]]] = {}
    changed, k = 0, 0
    while changed < goal:
        ((path, size),) = rng.choices(big, weights=[s for _, s in big])
        n = min(WRITE, goal - changed)
        off = rng.randrange(0, size - n)
        data = media(n, f"inc-patch{seed}-{k}")
        with open(path, "r+b") as f:
            f.seek(off)
            f.write(data)
        writes.setdefault(str(path.relative_to(root)), []).append((off, data))
        changed += n
        k += 1
    return writes


class Build:
    """One drsvc tree (this checkout, or ``--before``) with its own config, key, catalog, hot prefix, bucket."""

    phases = False  # print each backup's phases (--phases)

    def __init__(
        self, label: str, tree: Path, work: Path, desktop: str, tag: str, chunk_kib: int | None = None
    ) -> None:
        self.label, self.tree, self.desktop = label, tree, desktop
        self.bucket = re.sub(r"[^a-z0-9-]", "-", f"perf-inc-{tag}-{label}".lower())[:63].rstrip("-")
        self.dir = work / f"drsvc-{label}"
        (self.dir / "policies").mkdir(parents=True)
        generate_key_file(self.dir / "drsvc.key")
        self.hot_url = f"rados://drsvc-hot/perf-inc-{tag}-{label}"
        self.config = self.dir / "drsvc.toml"
        text = config_text(hot=self.hot_url, cold=f"s3://{self.bucket}/fleet", runtime=True)
        if chunk_kib is not None:
            text = text.replace("[hot]\n", f"[hot]\nchunk_kib = {chunk_kib}\n", 1)
        self.config.write_text(text)
        self.env = {**os.environ, "PYTHONPATH": str(tree)}
        byte_compile(tree)
        self.s3 = boto3.client("s3", endpoint_url=ENDPOINT)
        self.policy(full_every=24)

    def policy(self, *, full_every: int) -> None:
        (self.dir / "policies" / "bench.yaml").write_text(
            json.dumps(
                {
                    "name": "bench",
                    "selector": {"desktops": [self.desktop]},
                    "schedule": "0 * * * *",
                    "capture": {"full_every": full_every},
                    "retention": {"hot": {"last": 100}, "cold": {"last": 100}},
                    "tiering": {"after": "1s", "storage_class": "STANDARD"},
                }
            )
        )

    def drsvc(self, *args: str) -> subprocess.CompletedProcess[str]:
        # -P: ``-m`` would put the working directory (a checkout: its own drsvc) before PYTHONPATH
        return run(PYTHON, "-P", "-m", "drsvc", "--config", str(self.config), *args, timeout=1200, env=self.env)

    def round(self) -> dict[str, float]:
        before = bucket_bytes(self.s3, self.bucket) if self.cold_exists() else 0
        t = time.perf_counter()
        doc = json.loads(self.drsvc("--json", "backup", "--policy", "bench").stdout)
        backup = time.perf_counter() - t
        (result,) = doc["results"]
        assert result["status"] == "complete", result
        if self.phases:
            print(f"    {self.label}: backup {backup:.2f} s, phases {doc['phases']}", flush=True)
        time.sleep(1.1)  # the policy's tiering.after
        t = time.perf_counter()
        self.drsvc("tier")
        tier = time.perf_counter() - t
        capture = self.capture(result["point_id"])
        return {
            "backup": backup,
            "tier": tier,
            "total": backup + tier,
            "read_mib": (capture["read_bytes"] + capture.get("hot_bytes_read", 0)) / MiB,
            "stored_mib": (bucket_bytes(self.s3, self.bucket) - before) / MiB,
            "incremental": float(capture["mode"] == "incremental"),
        }

    def cold_exists(self) -> bool:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
            return True
        except Exception:
            return False

    def capture(self, point: str) -> dict[str, Any]:
        config = load_config(self.config)
        catalog = Catalog.open(config.catalog.path)
        try:
            manifest = Services(config, catalog).hot.get_manifest(self.desktop, point)
        finally:
            catalog.close()
        return dict(manifest["volume"]["capture"])

    def hot_objects(self) -> int:
        """Objects in the hot store (chunks, manifests, config, keys): one listing, untimed."""
        from drsvc.storage import open_store

        return sum(1 for _ in open_store(self.hot_url).list(""))

    def cleanup(self) -> None:
        try:
            catalog = Catalog.open(self.dir / "catalog.db")
            from drsvc.volumes import open_snapshots

            for row in catalog.query("SELECT pool, name FROM pool_snapshots WHERE removed_at IS NULL"):
                open_snapshots(row["pool"]).remove(row["name"])
            catalog.close()
        except Exception as e:  # the bench's own leftovers: report, go on cleaning
            print(f"cleanup: pool snapshots of {self.label}: {e}", file=sys.stderr)
        from drsvc.storage import open_store

        hot = open_store(self.hot_url)
        hot.delete_many(list(hot.list("")))
        subprocess.run(
            ["radosgw-admin", "bucket", "rm", "--bucket", self.bucket, "--purge-objects", "--bypass-gc"],
            capture_output=True,
            timeout=300,
        )


class Bench:
    def __init__(
        self, work: Path, src: Path, before: list[Path], this: Path = ROOT, chunk_kib: tuple[int, ...] = ()
    ) -> None:
        self.work, self.src = work, src
        tag = uuid.uuid4().hex[:6]
        self.prefix = f"perf-inc-{tag}"
        self.desktop = f"{self.prefix}-001"
        self.restic_bucket = f"perf-inc-restic-{tag}"
        self.builds = [Build("this", this, work, self.desktop, tag)]
        self.builds += [Build(f"kib{n}", this, work, self.desktop, tag, chunk_kib=n) for n in chunk_kib]
        self.builds += [Build(tree.resolve().name, tree.resolve(), work, self.desktop, tag) for tree in before]
        import rados

        self.cluster = rados.Rados(conffile=env("CEPH_CONF"))
        self.cluster.connect(timeout=15)
        self.io = self.cluster.open_ioctx("desktops")
        self.io.set_namespace(self.desktop)
        self.hot_io = self.cluster.open_ioctx("drsvc-hot")
        self.filler = f"{self.prefix}-fleet/"
        self.filled = 0
        self.s3 = boto3.client("s3", endpoint_url=ENDPOINT)

    def checkpoint_round(self) -> dict[str, float]:
        """A raw ``podman container checkpoint`` of the same running container: the CRIU floor."""
        archive = self.work / "raw-checkpoint.tar"
        t = time.perf_counter()
        run(
            "podman",
            "container",
            "checkpoint",
            "--leave-running",
            "--tcp-established",
            "-e",
            str(archive),
            self.desktop,
        )
        took = time.perf_counter() - t
        archive.unlink()
        return {"total": took}

    def restic(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(self.work / "restic-cache")}
        return run("restic", "-r", f"s3:{ENDPOINT}/{self.restic_bucket}", *args, cwd=self.src, env=env, timeout=1200)

    # ------------------------------------------------------------------ setup

    def setup(self, mib: float, seed: int) -> int:
        run(str(ROOT / "dev" / "lab"), "fleet", "1", "--prefix", self.prefix, "--data-mib", "1", timeout=600)
        for o in list(self.io.list_objects()):  # the fleet's own data set: this bench writes its own
            self.io.remove_object(o.key)
        written = make_desktop(self.src, mib, seed)
        for path in files_of(self.src):
            data = path.read_bytes()
            name = str(path.relative_to(self.src))
            self.io.write_full(name, data[: 64 * MiB])
            for off in range(64 * MiB, len(data), 64 * MiB):
                self.io.write(name, data[off : off + 64 * MiB], off)
        self.restic("init")
        return written

    def fill_pool(self, count: int) -> None:
        """``count`` empty objects in the hot pool under the bench's own prefix (the rest of a fleet)."""
        self.filled = count  # cleanup removes them all, also after a failure here
        names = (self.filler + f"{i:08d}" for i in range(count))
        self._pipelined(names, lambda oid: self.hot_io.aio_write_full(oid, b""))

    def _pipelined(self, oids: Any, submit: Any) -> None:
        inflight: list[Any] = []
        for oid in oids:
            inflight.append(submit(oid))
            if len(inflight) >= 512:
                for comp in inflight:
                    comp.wait_for_complete_and_cb()
                inflight = []
        for comp in inflight:
            comp.wait_for_complete_and_cb()

    def change(self, fraction: float, seed: int) -> int:
        writes = scatter(self.src, fraction, seed)
        for name, pieces in writes.items():
            for off, data in pieces:
                self.io.write(name, data, off)
        return sum(len(d) for pieces in writes.values() for _, d in pieces)

    # ------------------------------------------------------------------ one backup each

    def restic_round(self) -> dict[str, float]:
        before = bucket_bytes(self.s3, self.restic_bucket)
        t = time.perf_counter()
        self.restic("backup", ".")
        total = time.perf_counter() - t
        return {"total": total, "stored_mib": (bucket_bytes(self.s3, self.restic_bucket) - before) / MiB}

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> None:
        subprocess.run(["podman", "rm", "-f", "-t", "0", self.desktop], capture_output=True, timeout=120)
        for o in list(self.io.list_objects()):
            self.io.remove_object(o.key)
        if self.filled:
            self._pipelined((self.filler + f"{i:08d}" for i in range(self.filled)), self.hot_io.aio_remove)
        self.hot_io.close()
        for build in self.builds:
            build.cleanup()
        subprocess.run(
            ["radosgw-admin", "bucket", "rm", "--bucket", self.restic_bucket, "--purge-objects", "--bypass-gc"],
            capture_output=True,
            timeout=300,
        )
        self.io.close()
        self.cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=float, default=1024, help="size of the desktop data set")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--change", type=float, default=0.02, help="fraction of bytes overwritten per change round")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--before", type=Path, action="append", default=[], help="another drsvc tree (repeatable)")
    parser.add_argument("--this", type=Path, default=ROOT, help="the drsvc tree of the 'this' build (default: here)")
    parser.add_argument("--no-full", action="store_true", help="skip the full-read rows (capture.full_every: 1)")
    parser.add_argument(
        "--chunk-kib",
        type=int,
        action="append",
        default=[],
        help="also a build of this tree whose new hot store cuts N KiB chunks on average (repeatable)",
    )
    parser.add_argument("--pool-objects", type=int, default=0, help="empty objects put in the hot pool first")
    parser.add_argument("--phases", action="store_true", help="print each drsvc backup's phase seconds")
    args = parser.parse_args()
    Build.phases = args.phases
    reference_tool("restic")
    work = Path(tempfile.mkdtemp(prefix="perf-inc-bench-"))
    src = Path(tempfile.mkdtemp(prefix="perf-inc-bench-src-", dir="/dev/shm"))
    bench = Bench(work, src, args.before, args.this.resolve(), tuple(args.chunk_kib))
    builds = bench.builds
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    try:
        if args.pool_objects:
            t = time.perf_counter()
            bench.fill_pool(args.pool_objects)
            print(f"hot pool: {args.pool_objects} more objects in {time.perf_counter() - t:.1f} s")
        written = bench.setup(args.mib, args.seed)
        print(f"desktop {bench.desktop}: {written / MiB:.0f} MiB in {len(files_of(src))} objects; seconds, MiB")
        keys = ("total", "backup", "backup-ckpt", "tier", "read_mib", "stored_mib")
        first: dict[str, list[dict[str, float]]] = {f"drsvc {b.label} backup + tier (full)": [] for b in builds}
        for b in builds:
            first[f"drsvc {b.label} backup + tier (full)"].append(b.round())
        first["restic backup"] = [bench.restic_round()]
        show_medians("first backup into S3", first, keys)

        def turn(rows: dict[str, list[dict[str, float]]], r: int, full: bool) -> None:
            """One round: every build (rotating who goes first), the checkpoint floor, restic."""
            for b in builds[r % len(builds) :] + builds[: r % len(builds)]:
                rows[f"drsvc {b.label} incremental"].append(b.round())
                if full:
                    b.policy(full_every=1)
                    rows[f"drsvc {b.label} full read"].append(b.round())
                    b.policy(full_every=24)
            floor = bench.checkpoint_round()
            rows["raw podman checkpoint"].append(floor)
            for b in builds:
                last = rows[f"drsvc {b.label} incremental"][-1]
                last["backup-ckpt"] = last["backup"] - floor["total"]
            rows["restic"].append(bench.restic_round())

        def table(full: bool) -> dict[str, list[dict[str, float]]]:
            rows: dict[str, list[dict[str, float]]] = {}
            for b in builds:
                rows[f"drsvc {b.label} incremental"] = []
                if full:
                    rows[f"drsvc {b.label} full read"] = []
            rows["raw podman checkpoint"] = []
            rows["restic"] = []
            return rows

        same = table(not args.no_full)
        for r in range(args.rounds):
            turn(same, r, not args.no_full)
        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        show_medians("nothing changed", same, keys)
        changed = table(False)
        sizes = []
        for r in range(args.rounds):
            sizes.append(bench.change(args.change, args.seed * 100 + r) / MiB)
            turn(changed, r, False)
        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        title = f"after a {args.change:.0%} scattered change ({'/'.join(f'{s:.1f}' for s in sizes)} MiB)"
        show_medians(title, changed, keys)
        for b in builds:
            rows = same[f"drsvc {b.label} incremental"] + changed[f"drsvc {b.label} incremental"]
            assert all(r["incremental"] for r in rows), b.label
            mine = changed[f"drsvc {b.label} incremental"]
            growth = [d["stored_mib"] / s for d, s in zip(mine, sizes, strict=True)]
            print(f"  stored growth / changed bytes: drsvc {b.label} {statistics.median(growth):.2f}x")
        rgrowth = [d["stored_mib"] / s for d, s in zip(changed["restic"], sizes, strict=True)]
        print(f"  stored growth / changed bytes: restic {statistics.median(rgrowth):.2f}x")
        for b in builds:
            print(f"  hot store objects: drsvc {b.label} {b.hot_objects()}")
    finally:
        bench.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)


if __name__ == "__main__":
    main()
