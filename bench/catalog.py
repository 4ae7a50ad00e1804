"""Catalog recovery: ``drsvc catalog restore`` (its copy in the stores) vs ``catalog rebuild`` (every manifest).

A hot store on the lab's RADOS (and, with ``--cold``, a cold store on its radosgw) gets N point
manifests (10,000 by default; desktops of 20 points each, all referencing one small shared
stream, as a fleet's manifests reference their chunks). Then, round after round:

* **rebuild**: the catalog file is gone; ``drsvc catalog rebuild`` reads every manifest back;
* **restore**: the catalog is damaged (one page overwritten); ``drsvc catalog restore`` takes the
  copy the previous command wrote to the stores, checks it and catches up from the listing.

Both through the real CLI in a fresh process (what an operator waits for), best and every round
printed, with a raw floor in the same run: reading the copy's objects with librados and running
SQLite's quick_check on the file (what any restore must at least do). Everything written (the hot
prefix, the bucket prefix, the temp dir) is removed at the end.

    eval "$(dev/lab env)"; .venv/bin/python bench/catalog.py             # 10,000 points, ~2 min
    .venv/bin/python bench/catalog.py --points 2000 --rounds 2          # quick
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from _lab import DRSVC, config_text
from faultkit import overwrite_page

from drsvc import clock
from drsvc.backup import MANIFEST_FORMAT
from drsvc.catalog import Catalog
from drsvc.catalog_copy import list_copies, read_copy, stores_of
from drsvc.config import load_config
from drsvc.crypto import generate_key_file
from drsvc.services import Services


def write_config(root: Path, hot: str, cold: str | None) -> Path:
    (root / "policies").mkdir(parents=True, exist_ok=True)
    generate_key_file(root / "drsvc.key")
    (root / "drsvc.toml").write_text(config_text(hot=hot, cold=cold))
    return root / "drsvc.toml"


def fill(config: Path, points: int, per_desktop: int = 20) -> None:
    """``points`` manifests in every configured store, sharing one small stream."""
    services = Services(load_config(config), Catalog.open(":memory:"))
    stores = [store for _, store in stores_of(services)]
    base = clock.now() - timedelta(days=30)
    refs = [store.write_stream(os.urandom(64 * 1024)).to_dict() for store in stores]

    def manifest(n: int, ref: dict) -> tuple[str, str, dict]:
        desktop = f"bench-{n // per_desktop:05d}"
        taken = base + timedelta(minutes=n)
        pid = f"{clock.compact(taken)}-{desktop}-{n:06x}"
        return (
            desktop,
            pid,
            {
                "format": MANIFEST_FORMAT,
                "point_id": pid,
                "desktop": desktop,
                "taken_at": clock.to_iso(taken),
                "policy": None,
                "consistency": "crash",
                "reason": "benchmark",
                "freeze_ms": None,
                "runtime": {"url": "podman:///bench", "container": desktop, "labels": {}, "tenant": "bench"},
                "volume": {
                    "url": f"rados://desktops/{desktop}",
                    "pool_snapshot": f"drsvc-bench-{n}",
                    "objects": [{"name": "data", "size": 65536, "digest": "0" * 64, "xattrs": {}, "omap": {}}],
                    "stream": ref,
                },
                "checkpoint": None,
                "image": None,
            },
        )

    for store, ref in zip(stores, refs, strict=True):
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n, s=store, r=ref: s.put_manifest(*manifest(n, r)), range(points)))
    services.catalog.close()


def cli(config: Path, *args: str) -> float:
    t = time.perf_counter()
    p = subprocess.run([DRSVC, "--config", str(config), *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"drsvc {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return elapsed


def floor(config: Path) -> float:
    """Read the newest copy's objects, decompress, write the file, quick_check: the least a restore does."""
    services = Services(load_config(config), Catalog.open(":memory:"))
    t = time.perf_counter()
    info, store = list_copies(stores_of(services)[:1])[0]
    raw = read_copy(store, info)
    with tempfile.NamedTemporaryFile(dir=config.parent) as f:
        f.write(raw)
        f.flush()
        conn = sqlite3.connect(f.name)
        conn.execute("PRAGMA quick_check").fetchall()
        conn.close()
    elapsed = time.perf_counter() - t
    services.catalog.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="also a cold store on the lab's radosgw")
    args = ap.parse_args()
    tag = uuid.uuid4().hex[:8]
    hot = f"rados://drsvc-hot/failsafe-bench-{tag}"
    cold = f"s3://drsvc-cold/failsafe-bench-{tag}" if args.cold else None
    root = Path(tempfile.mkdtemp(prefix="drsvc-bench-catalog-"))
    config = write_config(root, hot, cold)
    db = root / "catalog.db"
    try:
        t = time.perf_counter()
        fill(config, args.points)
        print(
            f"{args.points} manifests written in {time.perf_counter() - t:.1f} s ({hot}{', ' + cold if cold else ''})"
        )
        rebuild, restore, floors = [], [], []
        for n in range(1, args.rounds + 1):
            for suffix in ("", "-wal", "-shm", ".clean", ".copies"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            rebuild.append(cli(config, "catalog", "rebuild"))  # its end copies the catalog to the stores
            catalog = Catalog.open(db)
            count = catalog.query("SELECT count(*) AS n FROM points")[0]["n"]
            catalog.close()
            assert count == args.points, f"rebuild brought back {count} of {args.points} points"
            overwrite_page(db, page=5, seed=n)
            restore.append(cli(config, "catalog", "restore", "--force"))  # --force: whichever page was hit
            catalog = Catalog.open(db)
            count = catalog.query("SELECT count(*) AS n FROM points")[0]["n"]
            assert catalog.check() == [] and count == args.points, f"restore brought back {count} points"
            catalog.close()
            floors.append(floor(config))
            print(
                f"round {n}: rebuild {rebuild[-1]:6.2f} s   restore {restore[-1]:6.2f} s   "
                f"floor (read copy + quick_check) {floors[-1]:5.2f} s"
            )
        size = db.stat().st_size
        print(
            f"\n{args.points} points, catalog {size / 2**20:.1f} MiB: best rebuild {min(rebuild):.2f} s, "
            f"best restore {min(restore):.2f} s ({min(rebuild) / min(restore):.1f}x faster), floor {min(floors):.2f} s"
        )
    finally:
        services = Services(load_config(config), Catalog.open(":memory:"))
        for _, store in stores_of(services):
            store.store.delete_many(list(store.store.list("")))
        services.catalog.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
