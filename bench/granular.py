"""Granular restore benchmark: single objects back from hot and cold, points ls at 100,000 objects, mount vs dump.

Through the real CLI (``drsvc`` in its own process, what a user waits for), on the lab, beside
restic in the same run:

1. A lab desktop (``dev/lab fleet``) gets a 64 KiB and a 96 MiB object in its namespace (with
   xattrs and omap); ``drsvc backup`` takes a point, ``drsvc tier`` copies it to S3 (radosgw).
   restic backs the same two files up to a repository on the same radosgw.
2. Each object is deleted and brought back, rounds alternating:
   ``drsvc restore D --object NAME`` (hot: the pool snapshot, the copy drsvc picks),
   the same from hot chunks (``--from hot``: the pool snapshot skipped),
   ``drsvc restore D --object NAME --tier cold`` (cold chunks: ranged GETs of packs), and
   ``drsvc restore D --object NAME --to-dir`` from cold, beside
   ``restic restore latest --include /NAME --target DIR`` (files into the same tmpfs).
3. ``drsvc points ls`` of a point holding 100,000 objects (written into the hot store as backup
   writes a volume, manifest and catalog rows included), beside ``restic ls latest`` of a
   snapshot of 100,000 files.
4. Sequential read of the 96 MiB object through ``drsvc mount`` (``cat``) vs ``drsvc dump --from hot``
   and ``--from snapshot`` (both to /dev/null).

    eval "$(dev/lab env)"; flock /tmp/drsvc-lab.lock .venv/bin/python bench/granular.py [--rounds 3]

Everything it creates (desktop, namespace, hot prefix, buckets, temp dirs) is removed at the end.
Numbers are noisy on a shared 2-core machine: compare the columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _lab import DRSVC, ENDPOINT, ROOT, MiB, config_text, env, reference_tool, run

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.config import load_config
from drsvc.crypto import generate_key_file
from drsvc.services import Services

SMALL, BIG = "docs/small-64k.bin", "media/big-96m.bin"


def timed(*cmd: str, **kw: Any) -> float:
    t = time.perf_counter()
    run(*cmd, **kw)
    return time.perf_counter() - t


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        tag = uuid.uuid4().hex[:6]
        self.prefix = f"granular-bench-{tag}"
        self.desktop = f"{self.prefix}-001"
        self.bucket = f"granular-bench-{tag}"
        self.restic_bucket = f"granular-bench-restic-{tag}"
        self.dir = work / "drsvc"
        (self.dir / "policies").mkdir(parents=True)
        generate_key_file(self.dir / "drsvc.key")
        self.hot_url = f"rados://drsvc-hot/{self.prefix}"
        self.config = self.dir / "drsvc.toml"
        self.config.write_text(config_text(hot=self.hot_url, cold=f"s3://{self.bucket}/fleet", runtime=True))
        (self.dir / "policies" / "bench.yaml").write_text(
            json.dumps(
                {
                    "name": "bench",
                    "selector": {"desktops": [self.desktop]},
                    "schedule": "0 * * * *",
                    "retention": {"hot": {"last": 10}, "cold": {"last": 10}},
                    "tiering": {"after": "1s", "storage_class": "STANDARD"},
                }
            )
        )
        import rados

        self.cluster = rados.Rados(conffile=env("CEPH_CONF"))
        self.cluster.connect(timeout=15)
        self.io = self.cluster.open_ioctx("desktops")
        self.io.set_namespace(self.desktop)
        self.data = {SMALL: os.urandom(64 * 1024), BIG: os.urandom(96 * MiB)}
        self.scratch = Path(tempfile.mkdtemp(prefix="granular-bench-", dir="/dev/shm"))

    def drsvc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(DRSVC, "--config", str(self.config), *args)

    def t_drsvc(self, *args: str) -> float:
        return timed(DRSVC, "--config", str(self.config), *args)

    def services(self) -> Services:
        config = load_config(self.config)
        return Services(config, Catalog.open(config.catalog.path))

    # ------------------------------------------------------------------ setup

    def setup(self) -> str:
        import rados

        run(str(ROOT / "dev" / "lab"), "fleet", "1", "--prefix", self.prefix, "--data-mib", "4", timeout=600)
        for name, data in self.data.items():
            self.io.write_full(name, data[: 64 * MiB])
            if len(data) > 64 * MiB:
                self.io.write(name, data[64 * MiB :], 64 * MiB)
            self.io.set_xattr(name, "user.bench", b"1")
            with rados.WriteOpCtx() as op:
                self.io.set_omap(op, ("k",), (b"v",))
                self.io.operate_write_op(op, name)
        doc = json.loads(self.drsvc("--json", "backup", "--policy", "bench").stdout)
        point = doc["results"][0]["point_id"]
        time.sleep(1.5)
        self.drsvc("tier")
        src = self.scratch / "restic-src"
        for name, data in self.data.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
        self.restic("init")
        self.restic("backup", ".", cwd=src)
        shutil.rmtree(src)
        return point

    def restic(self, *args: str, cwd: Path | None = None, repo: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(self.work / "restic-cache")}
        return run("restic", "-r", f"s3:{ENDPOINT}/{repo or self.restic_bucket}", *args, cwd=cwd, env=env, timeout=1200)

    def t_restic(self, *args: str, repo: str | None = None) -> float:
        t = time.perf_counter()
        self.restic(*args, repo=repo)
        return time.perf_counter() - t

    # ------------------------------------------------------------------ single objects

    def check(self, name: str) -> None:
        size, _ = self.io.stat(name)
        got = bytearray()
        while len(got) < size:
            got += self.io.read(name, min(8 * MiB, size - len(got)), len(got))
        assert bytes(got) == self.data[name], f"{name} restored wrong"

    def restore_rounds(self, point: str, rounds: int) -> dict[str, dict[str, list[float]]]:
        out: dict[str, dict[str, list[float]]] = {n: {} for n in self.data}

        def note(name: str, what: str, seconds: float) -> None:
            out[name].setdefault(what, []).append(seconds)

        for _ in range(rounds):
            for name, data in self.data.items():
                self.io.remove_object(name)
                note(name, "drsvc hot (pool snapshot)", self.t_drsvc("restore", self.desktop, "--object", name))
                self.check(name)
                self.io.remove_object(name)
                note(
                    name,
                    "drsvc hot chunks (--from hot)",
                    self.t_drsvc("restore", self.desktop, "--object", name, "--from", "hot"),
                )
                self.check(name)
                self.io.remove_object(name)
                note(name, "drsvc cold", self.t_drsvc("restore", self.desktop, "--object", name, "--tier", "cold"))
                self.check(name)
                target = self.scratch / "out"
                os.sync()
                seconds = self.t_drsvc(
                    "restore", self.desktop, "--object", name, "--tier", "cold", "--to-dir", str(target)
                )
                note(name, "drsvc cold --to-dir (tmpfs)", seconds)
                assert (target / name).read_bytes() == data
                shutil.rmtree(target)
                os.sync()
                note(
                    name,
                    "restic restore --include (tmpfs)",
                    self.t_restic("restore", "latest", "--include", f"/{name}", "--target", str(target)),
                )
                found = [p for p in target.rglob("*") if p.is_file()]
                assert len(found) == 1 and found[0].read_bytes() == data, found
                shutil.rmtree(target)
        return out

    # ------------------------------------------------------------------ points ls at scale

    def big_point(self, count: int) -> str:
        """A point of ``count`` objects written as backup writes one (stream, manifest, catalog rows)."""
        from drsvc.backup import MANIFEST_FORMAT
        from drsvc.volumes.base import object_digest

        services = self.services()
        hot = services.hot
        desktop = f"{self.prefix}-many"
        services.catalog.upsert_desktop(
            {"id": desktop, "runtime_url": "podman://x", "container": desktop, "volume": f"rados://desktops/{desktop}"}
        )
        bodies = [f"object {i} of a large desktop\n".encode() * (1 + i % 7) for i in range(count)]
        names = sorted(f"home/user/mail/{i // 1000:03d}/{i:06d}.eml" for i in range(count))
        now = clock.to_iso(datetime.now(UTC))
        listed = [
            {
                "name": n,
                "size": len(b),
                "digest": object_digest([b], {"user.tag": b"x"}, {}),
                "mtime": now,
                "xattrs": {"user.tag": "78"},
                "omap": {},
            }
            for n, b in zip(names, bodies, strict=True)
        ]
        ref = hot.write_objects((len(b), [b]) for b in bodies)
        point = f"{clock.compact(datetime.now(UTC))}-{desktop}-{uuid.uuid4().hex[:6]}"
        manifest = {
            "format": MANIFEST_FORMAT,
            "point_id": point,
            "desktop": desktop,
            "taken_at": now,
            "runtime": {"container": desktop},
            "volume": {
                "url": f"rados://desktops/{desktop}",
                "pool_snapshot": "none",
                "objects": listed,
                "stream": ref.to_dict(),
            },
            "checkpoint": None,
        }
        hot.put_manifest(desktop, point, manifest)
        with services.catalog.transaction():
            services.catalog.add_point(
                {
                    "id": point,
                    "desktop_id": desktop,
                    "taken_at": now,
                    "status": "complete",
                    "consistency": "crash",
                    "bytes": ref.size,
                    "completed_at": now,
                }
            )
            services.catalog.set_tier(point, "hot", hot.store.url, stored_bytes=ref.size)
        services.catalog.close()
        src = self.scratch / "many"
        for n, b in zip(names, bodies, strict=True):
            (src / n).parent.mkdir(parents=True, exist_ok=True)
            (src / n).write_bytes(b)
        self.restic("init", repo=self.restic_bucket + "-many")
        self.restic("backup", ".", cwd=src, repo=self.restic_bucket + "-many")
        shutil.rmtree(src)
        return point

    def ls_rounds(self, point: str, rounds: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"drsvc points ls": [], "drsvc --json points ls": [], "restic ls latest": []}
        for _ in range(rounds):
            out["drsvc points ls"].append(self.t_drsvc("points", "ls", point))
            out["drsvc --json points ls"].append(self.t_drsvc("--json", "points", "ls", point))
            out["restic ls latest"].append(self.t_restic("ls", "latest", repo=self.restic_bucket + "-many"))
        lines = self.drsvc("points", "ls", point).stdout.count("\n")
        assert lines >= 100_000, lines
        return out

    # ------------------------------------------------------------------ mount vs dump

    def read_rounds(self, point: str, rounds: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"mount (cat, hot chunks)": [], "dump --from hot": [], "dump --from snapshot": []}
        mnt = self.scratch / "mnt"
        mnt.mkdir()
        for _ in range(rounds):
            proc = subprocess.Popen(
                [DRSVC, "--config", str(self.config), "mount", point, str(mnt)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                deadline = time.monotonic() + 60
                while not os.path.ismount(mnt):
                    assert proc.poll() is None and time.monotonic() < deadline, "mount failed"
                    time.sleep(0.05)
                t = time.perf_counter()
                with (mnt / "volume" / BIG).open("rb") as f:
                    while f.read(1 << 20):
                        pass
                out["mount (cat, hot chunks)"].append(time.perf_counter() - t)
            finally:
                subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=30)
                proc.wait(30)
            for copy in ("hot", "snapshot"):
                with open(os.devnull, "wb") as null:
                    t = time.perf_counter()
                    subprocess.run(
                        [DRSVC, "--config", str(self.config), "dump", point, BIG, "--from", copy],
                        stdout=null,
                        check=True,
                        timeout=600,
                    )
                    out[f"dump --from {copy}"].append(time.perf_counter() - t)
        return out

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> None:
        subprocess.run(["podman", "rm", "-f", "-t", "0", self.desktop], capture_output=True, timeout=120)
        for ns in (self.desktop,):
            io = self.cluster.open_ioctx("desktops")
            io.set_namespace(ns)
            for o in list(io.list_objects()):
                io.remove_object(o.key)
            io.close()
        try:
            db = self.dir / "catalog.db"
            catalog = Catalog.open(db)
            from drsvc.volumes import open_snapshots

            for row in catalog.query("SELECT pool, name FROM pool_snapshots WHERE removed_at IS NULL"):
                open_snapshots(row["pool"]).remove(row["name"])
            catalog.close()
        except Exception as e:  # the bench's own leftovers: report, go on cleaning
            print(f"cleanup: pool snapshots: {e}", file=sys.stderr)
        from drsvc.storage import open_store

        hot = open_store(self.hot_url)
        hot.delete_many(list(hot.list("")))
        for bucket in (self.bucket, self.restic_bucket, self.restic_bucket + "-many"):
            subprocess.run(
                ["radosgw-admin", "bucket", "rm", "--bucket", bucket, "--purge-objects", "--bypass-gc"],
                capture_output=True,
                timeout=300,
            )
        self.io.close()
        self.cluster.shutdown()
        shutil.rmtree(self.scratch, ignore_errors=True)


def show(title: str, rows: dict[str, list[float]], unit: str = "s", mib: float | None = None) -> None:
    print(f"\n{title}")
    for what, seconds in rows.items():
        each = " ".join(f"{s:.2f}" for s in seconds)
        extra = f"  ({mib / statistics.median(seconds):.0f} MiB/s)" if mib else ""
        print(f"  {what:<36} median {statistics.median(seconds):7.2f} {unit}   rounds: {each}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--objects", type=int, default=100_000, help="objects in the points ls point")
    args = parser.parse_args()
    reference_tool("restic")
    work = Path(tempfile.mkdtemp(prefix="granular-bench-"))
    bench = Bench(work)
    try:
        point = bench.setup()
        print(f"point {point}: 64 KiB and 96 MiB objects, hot (pool snapshot + chunks) and cold (S3 packs)")
        restores = bench.restore_rounds(point, args.rounds)
        show("restore one 64 KiB object (seconds, end to end through the CLI)", restores[SMALL])
        show("restore one 96 MiB object (seconds, end to end through the CLI)", restores[BIG], mib=96)
        show("sequential read of the 96 MiB object", bench.read_rounds(point, args.rounds), mib=96)
        many = bench.big_point(args.objects)
        show(f"list a point of {args.objects} objects", bench.ls_rounds(many, args.rounds))
    finally:
        bench.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
