"""Planning time at fleet scale: `drsvc run --once --dry-run` with 10,000 desktops and 1,000,000 points.

Builds a catalog (real schema) with N desktops over a few tenants and tiers and M recovery points,
writes 12 policies selecting them by label, then times what cron pays every minute: the
scheduler's plan (what is due, for how many desktops) in-process and as the real CLI command.

    .venv/bin/python bench/planning.py [--desktops 10000] [--points 1000000] [--keep DIR]

Goal: under 1 s. Prints one table; no lab needed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _lab import DRSVC

from drsvc.catalog import Catalog
from drsvc.config import load_config
from drsvc.crypto import generate_key_file
from drsvc.scheduler import Scheduler
from drsvc.services import Services

TIERS = ["standard", "executive", "lab", "kiosk"]
TENANTS = ["acme", "globex", "initech"]


def build(root: Path, desktops: int, points: int) -> Path:
    (root / "policies").mkdir(parents=True)
    generate_key_file(root / "drsvc.key")
    (root / "drsvc.toml").write_text('[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n')
    n = 0
    for tier in TIERS:
        for tenant in TENANTS:
            n += 1
            (root / "policies" / f"p{n}.yaml").write_text(
                f"name: {tier}-{tenant}\nselector: {{tenant: {tenant}, labels: {{tier: {tier}}}}}\n"
                f"schedule: '{n % 60} * * * *'\ntimezone: Europe/Berlin\nretention: {{hot: {{last: 24}}}}\n"
            )
    catalog = Catalog.open(root / "catalog.db")
    rng = random.Random(7)
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    ids = [f"d{i:05d}" for i in range(desktops)]
    with catalog.transaction():
        catalog.db.conn.executemany(
            "INSERT INTO desktops (id, runtime_url, container, volume, tenant, labels, first_seen, last_seen) "
            "VALUES (?, 'podman:///run/podman/podman.sock', ?, ?, ?, ?, ?, ?)",
            [
                (d, d, f"rados://desktops/{d}", TENANTS[i % 3], json.dumps({"tier": TIERS[i % 4]}), stamp, stamp)
                for i, d in enumerate(ids)
            ],
        )
    batch = 100_000
    for start in range(0, points, batch):
        rows = []
        for k in range(start, min(points, start + batch)):
            d = ids[k % desktops]
            t = now - timedelta(hours=k // desktops, minutes=rng.randrange(60))
            rows.append((f"p{k:07d}", d, t.strftime("%Y-%m-%dT%H:%M:%S.000000Z"), stamp))
        with catalog.transaction():
            catalog.db.conn.executemany(
                "INSERT INTO points (id, desktop_id, policy, taken_at, status, consistency, created_at) "
                "VALUES (?, ?, NULL, ?, 'complete', 'paired', ?)",
                rows,
            )
    catalog.close()
    return root / "drsvc.toml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--desktops", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="Build into (and keep) this directory.")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="drsvc-bench-plan-"))
    try:
        t = time.perf_counter()
        config_path = build(root, args.desktops, args.points)
        built = time.perf_counter() - t
        config = load_config(config_path)
        services = Services(config, Catalog.open(config.catalog.path))
        scheduler = Scheduler(services)
        _ = services.policies  # loading policies is part of the CLI number below
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            planned = scheduler.plan(datetime.now(UTC))
            samples.append(time.perf_counter() - t)
        cli = []
        for _ in range(3):
            t = time.perf_counter()
            out = subprocess.run(
                [
                    DRSVC,
                    "--config",
                    str(config_path),
                    "--json",
                    "run",
                    "--once",
                    "--dry-run",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            cli.append(time.perf_counter() - t)
        doc = json.loads(out.stdout)
        print(f"catalog: {args.desktops:,} desktops, {args.points:,} points, 12 policies (built in {built:.1f} s)")
        print(f"{'measure':44} {'best':>8} {'median':>8}")
        print(f"{'scheduler plan, in process':44} {min(samples):8.3f} {sorted(samples)[2]:8.3f}  s")
        print(f"{'drsvc run --once --dry-run (whole command)':44} {min(cli):8.3f} {sorted(cli)[1]:8.3f}  s")
        print(f"{'  of which planning (reported by the command)':44} {doc['planning_seconds']:8.3f}")
        print(f"due policies: {len(planned)}; desktops covered: {sum(p['desktops'] for p in planned):,}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
