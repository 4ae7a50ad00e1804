"""Cold-tier benchmark: drsvc tiering/restore vs restic vs raw boto3, on the lab's radosgw.

A mixed desktop data set (a shared base image, media, logs, thousands of small files) is written
to disk, ingested into a hot chunk store on RADOS (what ``drsvc backup`` does with a volume: every
file in name order as one stream, large files cut on their own, boundaries kept in the manifest),
then tiered to S3 by the real ``TierJob`` and restored from S3 to files. restic (Debian's) backs
up and restores the same directory to a repository on the same radosgw; a raw boto3 multipart
put/get of the same bytes is the ceiling. drsvc and restic take turns, round after round
(``--rounds``, each tool's best kept, every round printed): the machine's speed drifts
within minutes. All three restore into tmpfs (the page cache flushed first): the local disk's
writeback would otherwise set every speed. Then 2 % of the bytes change in scattered overwrites
and both tier/back up again; then an unchanged point is tiered; then a fleet of desktops sharing
most of their data.

    eval "$(dev/lab env)"; .venv/bin/python bench/tiering.py            # 1 GiB, ~6-7 min on 2 cores
    .venv/bin/python bench/tiering.py --mib 128 --fleet-mib 16         # quick run

Everything written (hot prefixes, buckets, temp dirs) is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import blake3
from _lab import ENDPOINT, MiB, config_text, reference_tool
from chunkstore import logs, media

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.chunks import StreamRef
from drsvc.config import load_config
from drsvc.crypto import generate_key_file
from drsvc.services import Services
from drsvc.tiering import TierJob

# ---------------------------------------------------------------------- data


def make_desktop(root: Path, mib: float, seed: int, shared: Path | None = None, shared_frac: float = 0.0) -> int:
    """Files under ``root``: base image (binaries + text), media, logs, thousands of small files.

    With ``shared`` (a desktop cloned from an image), the first ``shared_frac`` of the bytes are
    that directory's files at the same paths, and the desktop's own files live under
    ``home/<desktop>/`` (a user's home), not interleaved file by file with the image's.
    """
    rng = random.Random(seed)
    total = int(mib * MiB)
    written = 0

    def put(rel: str, data: bytes) -> None:
        nonlocal written
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += len(data)

    if shared is not None:
        budget = int(total * shared_frac)
        for src in sorted(p for p in shared.rglob("*") if p.is_file()):
            if written >= budget:
                break
            put(str(src.relative_to(shared)), src.read_bytes())
        rest = total - written
        parts = {"base": 0.0, "media": 0.4, "logs": 0.4, "small": 0.2}
    else:
        rest = total
        parts = {"base": 0.3, "media": 0.3, "logs": 0.25, "small": 0.15}
    tag = f"s{seed}"
    own = f"home/{tag}/" if shared is not None else ""
    n = int(rest * parts["base"]) // MiB
    for i in range(n):  # "/usr": half binaries, half text, 1 MiB files
        data = media(MiB // 2, f"base{i}") + logs(MiB // 2, 10_000 + i)
        put(f"base/usr/lib/f{i:04d}.so", data)
    budget = int(rest * parts["media"])
    i = 0
    while budget > 0:
        size = min(budget, rng.randrange(4, 24) * MiB)
        put(f"{own}home/media/{tag}-{i:03d}.mp4", media(size, f"{tag}-media{i}"))
        budget -= size
        i += 1
    budget = int(rest * parts["logs"])
    i = 0
    while budget > 0:
        size = min(budget, rng.randrange(256, 2048) * 1024)
        put(f"{own}var/log/{tag}-{i:04d}.log", logs(size, seed * 100_000 + i))
        budget -= size
        i += 1
    budget = max(0, total - written)
    i = 0
    while budget > 0:
        size = min(budget, rng.randrange(1, 48) * 1024)
        data = logs(size, seed * 1_000_000 + i) if i % 2 else media(size, f"{tag}-small{i}")
        put(f"{own}home/docs/{i // 500:02d}/{tag}-{i:05d}.dat", data)
        budget -= size
        i += 1
    return written


def files_of(root: Path) -> list[Path]:
    return sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: str(p.relative_to(root)))


def scatter_overwrites(root: Path, fraction: float, write_kib: int, seed: int) -> int:
    """Overwrite ``fraction`` of all bytes in place, ``write_kib`` at a time at random places."""
    rng = random.Random(seed)
    files = [(p, p.stat().st_size) for p in files_of(root)]
    big = [(p, s) for p, s in files if s > write_kib * 1024]
    total = sum(s for _, s in files)
    goal, changed, k = int(total * fraction), 0, 0
    weights = [s for _, s in big]
    while changed < goal:
        ((path, size),) = rng.choices(big, weights=weights)
        n = min(write_kib * 1024, goal - changed)
        off = rng.randrange(0, size - n)
        with open(path, "r+b") as f:
            f.seek(off)
            f.write(media(n, f"patch{seed}-{k}"))
        changed += n
        k += 1
    return changed


# ---------------------------------------------------------------------- drsvc deployment


class Drsvc:
    """A drsvc config (hot prefix on RADOS, cold prefix on S3, catalog) in a temp dir."""

    def __init__(
        self, work: Path, name: str, bucket: str, policy_desktops: list[str], cold_level: int | None = None
    ) -> None:
        self.dir = work / name
        (self.dir / "policies").mkdir(parents=True)
        generate_key_file(self.dir / "drsvc.key")
        self.hot_url = f"rados://drsvc-hot/bench-{uuid.uuid4().hex[:8]}"
        self.cold_url = f"s3://{bucket}/{name}"
        (self.dir / "drsvc.toml").write_text(
            config_text(hot=self.hot_url, cold=self.cold_url)
            + (f"zstd_level = {cold_level}\n" if cold_level is not None else "")  # else drsvc's default
        )
        (self.dir / "policies" / "bench.yaml").write_text(
            json.dumps(
                {
                    "name": "bench",
                    "selector": {"desktops": policy_desktops},
                    "schedule": "0 * * * *",
                    "retention": {"hot": {"last": 100}},
                    "tiering": {"after": "1s", "storage_class": "STANDARD"},
                }
            )
        )
        config = load_config(self.dir / "drsvc.toml")
        self.services = Services(config, Catalog.open(config.catalog.path))
        self.services.cold  # noqa: B018 - open (create) the cold store outside the timings
        self.clock = clock.now() - timedelta(days=1)

    def ingest(self, desktop: str, root: Path, tenant: str | None = None) -> tuple[str, float]:
        """Files -> hot chunk store as one point (what backup does with a volume); returns (id, seconds).

        ``tenant``: write with that tenant's data key (None: the fleet key)."""
        hot, catalog = self.services.hot.for_tenant(tenant), self.services.catalog
        files = files_of(root)
        objects = [{"name": str(p.relative_to(root)), "size": p.stat().st_size} for p in files]

        def pieces(path: Path) -> Iterator[bytes]:
            with open(path, "rb") as f:
                while piece := f.read(8 * MiB):
                    yield piece

        self.clock += timedelta(minutes=1)
        t = time.perf_counter()
        ref = hot.write_objects((obj["size"], pieces(p)) for obj, p in zip(objects, files, strict=True))
        pid = f"{clock.compact(self.clock)}-{desktop}-{uuid.uuid4().hex[:6]}"
        manifest = {
            "format": 1,
            "point_id": pid,
            "desktop": desktop,
            "taken_at": clock.to_iso(self.clock),
            "policy": "bench",
            "consistency": "crash",
            "reason": "bench",
            "runtime": {},
            "volume": {
                "url": f"rados://desktops/{desktop}",
                "pool_snapshot": None,
                "objects": objects,
                "stream": ref.to_dict(),
            },
            "checkpoint": None,
            "image": None,
        }
        hot.put_manifest(desktop, pid, manifest)
        seconds = time.perf_counter() - t
        catalog.upsert_desktop({"id": desktop, "runtime_url": "bench://", "container": desktop, "labels": {}})
        catalog.add_point(
            {
                "id": pid,
                "desktop_id": desktop,
                "policy": "bench",
                "taken_at": clock.to_iso(self.clock),
                "status": "complete",
                "consistency": "crash",
                "bytes": ref.size,
            }
        )
        catalog.set_tier(pid, "hot", hot.store.url)
        return pid, seconds

    def tier(self) -> tuple[float, Any]:
        t = time.perf_counter()
        report = TierJob(self.services, None).run()
        seconds = time.perf_counter() - t
        assert report.exit_code == 0, report.document()
        return seconds, report

    def restore(self, desktop: str, pid: str, target: Path) -> float:
        """Cold manifest -> files under ``target`` (what a cold restore of a volume does)."""
        cold = self.services.cold
        t = time.perf_counter()
        manifest = cold.get_manifest(desktop, pid)
        ref = StreamRef.from_dict(manifest["volume"]["stream"])
        objects = iter(manifest["volume"]["objects"])
        current = None
        left = 0
        for piece in cold.read_stream(ref):
            view = memoryview(piece)
            while view:
                if left == 0:
                    if current is not None:
                        current.close()
                    obj = next(objects)
                    path = target / obj["name"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    current, left = open(path, "wb"), obj["size"]  # noqa: SIM115
                    if left == 0:
                        continue
                n = min(left, len(view))
                current.write(view[:n])
                view, left = view[n:], left - n
        if current is not None:
            current.close()
        for obj in objects:  # trailing empty files
            (target / obj["name"]).parent.mkdir(parents=True, exist_ok=True)
            (target / obj["name"]).write_bytes(b"")
        return time.perf_counter() - t

    def cleanup(self) -> None:
        hot = self.services.hot.store
        hot.delete_many(list(hot.list()))
        self.services.catalog.close()


# ---------------------------------------------------------------------- restic, boto3


def restic(repo: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(Path(tempfile.gettempdir()) / "rc")}
    p = subprocess.run(
        ["restic", "-r", f"s3:{ENDPOINT}/{repo}", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if p.returncode != 0:
        raise RuntimeError(f"restic {' '.join(args)}: {p.stderr[-2000:]}")
    return p


def timed_restic(repo: str, *args: str, cwd: Path | None = None) -> float:
    t = time.perf_counter()
    restic(repo, *args, cwd=cwd)
    return time.perf_counter() - t


def bucket_bytes(client: Any, bucket: str, prefix: str = "") -> int:
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += sum(o["Size"] for o in page.get("Contents", ()))
    return total


def drop_bucket(client: Any, bucket: str) -> None:
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", ())
    ]
    for i in range(0, len(keys), 1000):
        client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
        )
    client.delete_bucket(Bucket=bucket)


def restore_scratch(work: Path, mib: float) -> Path:
    """Where restores land: tmpfs when it has room for two copies, else the work dir.

    The benchmark measures reading from S3; on this machine's disk every restore past the page
    cache runs at the disk's writeback speed (~140 MiB/s for drsvc and restic alike).
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 2 * mib * MiB + 512 * MiB:
        return Path(tempfile.mkdtemp(prefix="drsvc-bench-restore-", dir=shm))
    return work


def restore_rounds(scratch: Path, source: Path, restores: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    """Seconds of each restore (``name -> restore(target) -> seconds``) per round, the tools taking turns.

    Every restore is checked against ``source``. Dirty pages from the previous step (hot ingest,
    tiering, backups all write to this disk through Ceph) are flushed first, so no tool pays for
    another's writeback.
    """
    want = tree_hash(source)
    seconds: dict[str, list[float]] = {name: [] for name in restores}
    for _ in range(rounds):
        for name, restore in restores.items():
            target = scratch / "restore"
            os.sync()
            seconds[name].append(restore(target))
            assert tree_hash(target) == want, f"{name}: restore into {target} differs from {source}"
            shutil.rmtree(target)
    return seconds


def rates(mib: float, seconds: list[float]) -> str:
    """The rounds as MiB/s, in the order run."""
    return " ".join(f"{mib / s:.1f}" for s in seconds)


def tree_hash(root: Path) -> str:
    h = blake3.blake3()
    for p in files_of(root):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024, help="main data set size (default 1024)")
    ap.add_argument("--change", type=float, default=0.02, help="fraction of bytes overwritten (default 0.02)")
    ap.add_argument("--write-kib", type=int, default=128, help="size of each scattered overwrite (default 128)")
    ap.add_argument("--fleet", type=int, default=10, help="desktops in the fleet step (default 10)")
    ap.add_argument("--fleet-mib", type=int, default=100, help="MiB per fleet desktop (default 100)")
    ap.add_argument("--fleet-shared", type=float, default=0.7, help="shared fraction (default 0.7)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of tier/backup and restores, best kept (default 3)")
    ap.add_argument("--workdir", default=None, help="where the data sets go (default: a temp dir)")
    args = ap.parse_args()
    reference_tool("restic")

    import boto3
    from boto3.s3.transfer import TransferConfig

    client = boto3.client("s3", endpoint_url=ENDPOINT)
    run = uuid.uuid4().hex[:8]
    buckets = {
        "drsvc": f"bench-drsvc-{run}",
        "restic": f"bench-restic-{run}",
        "restic2": f"bench-resticf-{run}",
        "raw": f"bench-raw-{run}",
        **{f"restic-{r}": f"bench-restic-r{r}-{run}" for r in range(1, max(1, args.rounds))},  # later rounds
    }
    work = Path(tempfile.mkdtemp(prefix="drsvc-bench-", dir=args.workdir))
    data = work / "data" / "desk"
    deployments: list[Drsvc] = []
    scratch: Path | None = None
    results: dict[str, Any] = {}
    try:
        t = time.perf_counter()
        size = make_desktop(data, args.mib, seed=1)
        nfiles = len(files_of(data))
        mib = size / MiB
        print(
            f"data set: {mib:.0f} MiB in {nfiles} files (generated in {time.perf_counter() - t:.0f} s); work dir {work}"
        )
        for b in buckets:
            if b != "drsvc":  # drsvc creates its own
                client.create_bucket(Bucket=buckets[b])
        scratch = restore_scratch(work, mib)

        # -- ceiling: raw boto3 multipart of the same bytes (one concatenated object)
        blob = work / "concat.bin"
        with open(blob, "wb") as out:
            for p in files_of(data):
                out.write(p.read_bytes())
        tc = TransferConfig(multipart_threshold=16 * MiB, multipart_chunksize=16 * MiB, max_concurrency=8)
        t = time.perf_counter()
        client.upload_file(str(blob), buckets["raw"], "concat.bin", Config=tc)
        raw_put = time.perf_counter() - t
        os.sync()
        t = time.perf_counter()
        client.download_file(buckets["raw"], "concat.bin", str(scratch / "concat.back"), Config=tc)
        raw_get = time.perf_counter() - t
        (scratch / "concat.back").unlink()
        blob.unlink()
        print(f"boto3 raw   : put {mib / raw_put:6.1f} MiB/s  get {mib / raw_get:6.1f} MiB/s")

        # -- tier (drsvc) and backup (restic) of the same data, then restores, the tools taking turns.
        # This machine's speed drifts by 10-20 % within minutes: a tool measured once,
        # minutes after the other, would be compared with a moment rather than with the other tool.
        # Each round runs both tools back to back, each keeps its best round, and every round is printed.
        rounds = max(1, args.rounds)
        tier_deps = [Drsvc(work, "main" if r == 0 else f"main{r}", buckets["drsvc"], ["desk"]) for r in range(rounds)]
        deployments.extend(tier_deps)
        main_dep = tier_deps[0]
        ingested = [dep.ingest("desk", data) for dep in tier_deps]  # each round tiers its own hot copy
        p1, ingest1 = ingested[0]
        repos = [buckets["restic"]] + [buckets[f"restic-{r}"] for r in range(1, rounds)]
        tiered: list[tuple[float, Any]] = []
        backup_s: list[float] = []
        for dep, repo in zip(tier_deps, repos, strict=True):
            restic(repo, "init")
            os.sync()
            tiered.append(dep.tier())
            os.sync()
            backup_s.append(timed_restic(repo, "backup", "--host", "bench", ".", cwd=data))
        tier_s, rep1 = [seconds for seconds, _ in tiered], tiered[0][1]
        restore_s = restore_rounds(
            scratch,
            data,
            {
                "drsvc": lambda target: main_dep.restore("desk", p1, target),
                "restic": lambda target: timed_restic(buckets["restic"], "restore", "latest", "--target", str(target)),
            },
            rounds,
        )
        tier1, rb1 = min(tier_s), min(backup_s)
        restore1, rr1 = min(restore_s["drsvc"]), min(restore_s["restic"])
        cold1 = bucket_bytes(client, buckets["drsvc"], "main/")
        restic1 = bucket_bytes(client, buckets["restic"])
        print(
            f"drsvc       : ingest to hot {mib / ingest1:6.1f} MiB/s  tier {rates(mib, tier_s)} MiB/s  "
            f"restore {rates(mib, restore_s['drsvc'])} MiB/s  cold {cold1 / MiB:.0f} MiB "
            f"({rep1.moves[0].chunks_uploaded} chunks)"
        )
        print(
            f"restic      : backup {rates(mib, backup_s)} MiB/s  restore {rates(mib, restore_s['restic'])} MiB/s  "
            f"repo {restic1 / MiB:.0f} MiB"
        )

        # -- 2 % scattered overwrites
        changed = scatter_overwrites(data, args.change, args.write_kib, seed=7)
        main_dep.ingest("desk", data)
        tier2, _ = main_dep.tier()
        growth_d = bucket_bytes(client, buckets["drsvc"], "main/") - cold1
        rb2 = timed_restic(buckets["restic"], "backup", "--host", "bench", ".", cwd=data)
        growth_r = bucket_bytes(client, buckets["restic"]) - restic1
        print(
            f"2% change   : {changed / MiB:.1f} MiB changed in {args.write_kib} KiB writes; drsvc cold +"
            f"{growth_d / MiB:.1f} MiB ({growth_d / changed:.2f}x, tier {tier2:.1f} s); restic +"
            f"{growth_r / MiB:.1f} MiB ({growth_r / changed:.2f}x, backup {rb2:.1f} s)"
        )

        # -- unchanged point
        _, ingest3 = main_dep.ingest("desk", data)
        tier3, rep3 = main_dep.tier()
        rb3 = timed_restic(buckets["restic"], "backup", "--host", "bench", ".", cwd=data)
        print(
            f"unchanged   : drsvc tier {tier3:.2f} s ({rep3.moves[0].chunks_uploaded} chunks uploaded; "
            f"hot ingest {ingest3:.1f} s); restic backup {rb3:.1f} s"
        )

        # -- fleet: N desktops sharing most of their data
        shutil.rmtree(work / "data")
        fleet_root = work / "fleet"
        base = fleet_root / "base-src"
        make_desktop(base, args.fleet_mib, seed=500)
        names = [f"f{i:02d}" for i in range(args.fleet)]
        for i, name in enumerate(names):
            make_desktop(
                fleet_root / "desks" / name, args.fleet_mib, seed=600 + i, shared=base, shared_frac=args.fleet_shared
            )
        shutil.rmtree(base)
        fleet_bytes = sum(p.stat().st_size for p in (fleet_root / "desks").rglob("*") if p.is_file())
        fleet_dep = Drsvc(work, "fleet", buckets["drsvc"], names)
        deployments.append(fleet_dep)
        for name in names:
            fleet_dep.ingest(name, fleet_root / "desks" / name)
        tierf, _ = fleet_dep.tier()
        fleet_d = bucket_bytes(client, buckets["drsvc"], "fleet/")
        # the same fleet with the cold tier's frames at zstd level 7 ([cold] zstd_level): bytes vs CPU
        fleet7 = Drsvc(work, "fleet7", buckets["drsvc"], names, cold_level=7)
        deployments.append(fleet7)
        for name in names:
            fleet7.ingest(name, fleet_root / "desks" / name)
        tierf7, _ = fleet7.tier()
        fleet_d7 = bucket_bytes(client, buckets["drsvc"], "fleet7/")
        restic(buckets["restic2"], "init")
        tf = time.perf_counter()
        for name in names:
            restic(buckets["restic2"], "backup", "--host", name, ".", cwd=fleet_root / "desks" / name)
        rbf = time.perf_counter() - tf
        fleet_r = bucket_bytes(client, buckets["restic2"])
        print(
            f"fleet       : {args.fleet} x {args.fleet_mib} MiB ({fleet_bytes / MiB:.0f} MiB, "
            f"{args.fleet_shared:.0%} shared); drsvc cold {fleet_d / MiB:.1f} MiB (tier {tierf:.1f} s; "
            f"zstd_level 7: {fleet_d7 / MiB:.1f} MiB, tier {tierf7:.1f} s); restic {fleet_r / MiB:.1f} MiB "
            f"(backup {rbf:.1f} s)"
        )

        results = {
            "mib": mib,
            "files": nfiles,
            "tier": {"drsvc": mib / tier1, "restic": mib / rb1, "boto3": mib / raw_put},
            "restore": {"drsvc": mib / restore1, "restic": mib / rr1, "boto3": mib / raw_get},
            "rounds": {
                "drsvc_tier": [mib / s for s in tier_s],
                "restic_backup": [mib / s for s in backup_s],
                "drsvc_restore": [mib / s for s in restore_s["drsvc"]],
                "restic_restore": [mib / s for s in restore_s["restic"]],
            },
            "drsvc_hot_ingest": mib / ingest1,
            "changed_bytes": changed,
            "growth": {"drsvc": growth_d, "restic": growth_r},
            "unchanged_seconds": {"drsvc_tier": tier3, "restic_backup": rb3},
            "fleet_bytes": fleet_bytes,
            "fleet_stored": {"drsvc": fleet_d, "drsvc_zstd_level_7": fleet_d7, "restic": fleet_r},
        }
        print()
        print(f"{'':28}{'drsvc':>12}{'restic':>12}{'boto3':>12}   goal")
        print(
            f"{'tier / backup MiB/s':28}{mib / tier1:12.1f}{mib / rb1:12.1f}{mib / raw_put:12.1f}   "
            f"drsvc >= 1.5x restic: {'met' if tier1 * 1.5 <= rb1 else 'MISSED'} ({rb1 / tier1:.1f}x)"
        )
        print(
            f"{'restore from S3 MiB/s':28}{mib / restore1:12.1f}{mib / rr1:12.1f}{mib / raw_get:12.1f}   "
            f"drsvc >= 1.5x restic: {'met' if restore1 * 1.5 <= rr1 else 'MISSED'} ({rr1 / restore1:.1f}x)"
        )
        print(
            f"{'growth after 2% (x changed)':28}{growth_d / changed:12.2f}{growth_r / changed:12.2f}{'':12}   "
            f"<= 3x: {'met' if growth_d <= 3 * changed else 'MISSED'}"
        )
        print(
            f"{'unchanged point (s)':28}{tier3:12.2f}{rb3:12.2f}{'':12}   < 0.5 s: {'met' if tier3 < 0.5 else 'MISSED'}"
        )
        print(
            f"{'fleet stored (MiB)':28}{fleet_d / MiB:12.1f}{fleet_r / MiB:12.1f}{'':12}   "
            f"<= restic: {'met' if fleet_d <= fleet_r else 'MISSED'} ({fleet_d / fleet_r - 1:+.1%})"
        )
        print(
            f"{'  with zstd_level 7':28}{fleet_d7 / MiB:12.1f}{fleet_r / MiB:12.1f}{'':12}   "
            f"<= restic: {'met' if fleet_d7 <= fleet_r else 'MISSED'} ({fleet_d7 / fleet_r - 1:+.1%})"
        )
        print(json.dumps(results))
    finally:
        for dep in deployments:
            try:
                dep.cleanup()
            except Exception as e:  # keep cleaning the rest
                print(f"cleanup {dep.hot_url}: {e}", file=sys.stderr)
        for name in buckets.values():
            try:
                drop_bucket(client, name)
            except Exception as e:
                print(f"cleanup bucket {name}: {e}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(Path(tempfile.gettempdir()) / "rc", ignore_errors=True)


if __name__ == "__main__":
    main()
