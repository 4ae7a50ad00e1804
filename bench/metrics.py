"""/metrics render time at fleet scale: one scrape of drsvc's catalog collector at 10,000 desktops.

Builds a catalog (real schema) with N desktops under two policies (one tiering to S3), P points per
desktop (some failed, some already cold), a drill and a verification per policy, then times
``metrics.render`` (what each Prometheus scrape of ``drsvc run --metrics-listen`` costs: the
catalog read, the health judgement, the exposition) and, as the reference in the same run,
prometheus_client rendering the same number of series from plain in-memory gauges (the cost of the
text format alone). The HTTP server of ``--metrics-listen`` adds only the socket to this.

``--status`` also times ``drsvc --json status`` on the same catalog (a fresh process each round):
with the tier lag the last tier run recorded, and with no record (status then plans tiering, which
is what every status did before it read the record).

``--before TREE`` also times, alternating in fresh processes, this build and the drsvc package
of another source tree (``git archive REV drsvc | tar -x -C TREE``) on the same catalog, as the
daemon scrapes: its first scrape, a repeat with nothing committed, and the scrape after a job
finished (a commit), with the reference rendering as many plain series in the same process.

    .venv/bin/python bench/metrics.py [--desktops 10000] [--points 30] [--rounds 3] [--status] [--before TREE]

No lab needed.
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

import _lab  # the checkout on sys.path (first, before drsvc)
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from drsvc import clock, metrics
from drsvc.catalog import Catalog
from drsvc.health import record_tier_lag, tier_lag
from drsvc.policy import load_policies

POLICIES = {
    "standard": "name: standard\nselector: {labels: {tier: standard}}\nschedule: '0 * * * *'\n"
    "objectives: {rpo: 2h}\nretention: {hot: {last: 24}, cold: {daily: 30}}\n"
    "tiering: {after: 1d}\ndrill: {schedule: '0 3 * * *', sample: 1}\nverify: {schedule: '0 4 * * *'}\n",
    "executive": "name: executive\nselector: {labels: {tier: executive}}\nschedule: '*/15 * * * *'\n"
    "objectives: {rpo: 30m}\nretention: {hot: {last: 96}}\ndrill: {schedule: '0 3 * * *', sample: 1}\n",
}


def build(root: Path, desktops: int, per_desktop: int) -> Path:
    (root / "policies").mkdir(parents=True)
    for name, text in POLICIES.items():
        (root / "policies" / f"{name}.yaml").write_text(text)
    catalog = Catalog.open(root / "catalog.db")
    rng = random.Random(3)
    now = datetime.now(UTC)
    stamp = clock.to_iso(now)
    ids = [f"desk-{i:05d}" for i in range(desktops)]
    tier_of = {d: ("executive" if i % 10 == 0 else "standard") for i, d in enumerate(ids)}
    with catalog.transaction():
        catalog.db.conn.executemany(
            "INSERT INTO desktops (id, runtime_url, container, volume, labels, first_seen, last_seen) "
            "VALUES (?, 'podman:///run/podman/podman.sock', ?, ?, ?, ?, ?)",
            [(d, d, f"rados://desktops/{d}", f'{{"tier": "{tier_of[d]}"}}', stamp, stamp) for d in ids],
        )
        points, tiers = [], []
        for d in ids:
            for k in range(per_desktop):
                pid = f"{d}-{k:03d}"
                taken = clock.to_iso(now - timedelta(hours=k, minutes=rng.randrange(50)))
                status = "failed" if rng.random() < 0.02 else "complete"
                points.append((pid, d, tier_of[d], taken, status, 20 + rng.random() * 400, stamp))
                if status == "complete":
                    tiers.append((pid, "hot", "rados://drsvc-hot", 1 << 20, stamp))
                    if k > 30:
                        tiers.append((pid, "cold", "s3://cold/fleet", 1 << 19, stamp))
        catalog.db.conn.executemany(
            "INSERT INTO points (id, desktop_id, policy, taken_at, status, consistency, freeze_ms, bytes, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'paired', ?, 104857600, ?)",
            points,
        )
        catalog.db.conn.executemany(
            "INSERT INTO point_tiers (point_id, tier, store_url, stored_bytes, added_at) VALUES (?, ?, ?, ?, ?)", tiers
        )
        for policy in POLICIES:
            cur = catalog.execute(
                "INSERT INTO drills (started_at, finished_at, policy, selection, status) "
                "VALUES (?, ?, ?, 's', 'passed')",
                [stamp, stamp, policy],
            )
            sample = [d for d in ids if tier_of[d] == policy][:5]
            for d in sample:
                catalog.execute(
                    "INSERT INTO drill_results (drill_id, desktop_id, rto_seconds, target_seconds, passed) "
                    "VALUES (?, ?, ?, 30, 1)",
                    [cur.lastrowid, d, 8 + rng.random() * 10],
                )
            job = catalog.start_job("verify", policy=policy)
            catalog.finish_job(job, "ok")
    catalog.close()
    return root / "catalog.db"


def reference(series: int) -> CollectorRegistry:
    """The same number of labelled series, as plain gauges (the text format's own cost)."""
    reg = CollectorRegistry()
    gauge = Gauge("ref_series", "reference", ["desktop", "policy"], registry=reg)
    for i in range(series):
        gauge.labels(f"desk-{i:06d}", "standard").set(i)
    return reg


SCRAPES = """
import json, sys, time
tree, db, policies_dir = sys.argv[1:4]
sys.path.insert(0, tree)  # this tree's drsvc, not the editable install's
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from drsvc import metrics
from drsvc.catalog import Catalog
from drsvc.policy import load_policies
policies = load_policies([policies_dir])
reg = metrics.registry(db, lambda: policies, lambda: {})  # the daemon's: tier lag from its tier run
took = {}
def scrape(name):
    t = time.perf_counter()
    text = metrics.render(reg)
    took[name] = time.perf_counter() - t
    return text
scrape("first scrape")
scrape("repeat, nothing committed")
catalog = Catalog.open(db, migrate=False)
catalog.finish_job(catalog.start_job("gc"), "ok")
catalog.close()
text = scrape("after a commit (a job finished)")
ref = CollectorRegistry()
gauge = Gauge("ref_series", "reference", ["desktop", "policy"], registry=ref)
for i in range(sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))):
    gauge.labels(f"desk-{i:06d}", "standard").set(i)
t = time.perf_counter()
generate_latest(ref)
took["reference: prometheus_client, as many plain series"] = time.perf_counter() - t
took["drsvc module"] = metrics.__file__
print(json.dumps(took))
"""


def time_scrapes(root: Path, rounds: int, before: Path) -> None:
    """The daemon's scrapes with this build and ``before``, alternating, each in a fresh process."""
    rows: dict[str, list[float]] = {}
    for _ in range(rounds):
        for build, tree in (("before", before), ("this build", _lab.ROOT)):
            cmd = [sys.executable, "-c", SCRAPES, str(tree), str(root / "catalog.db"), str(root / "policies")]
            took = json.loads(subprocess.run(cmd, capture_output=True, check=True, text=True).stdout)
            assert Path(took.pop("drsvc module")).is_relative_to(tree), "the child imported another drsvc"
            for name, seconds in took.items():
                rows.setdefault(f"{build}: {name}", []).append(seconds)
    print(f"\n{'daemon scrapes, alternating builds (fresh process each)':70} {'best':>8} {'median':>8}")
    for name, runs in sorted(rows.items()):
        print(f"{name:70} {min(runs):7.3f}s {sorted(runs)[len(runs) // 2]:7.3f}s")


def time_status(root: Path, rounds: int, recorded: bool, lag: dict[tuple[str, str], int]) -> list[float]:
    """``drsvc --json status`` in a fresh process, ``rounds`` times (exit 5: objectives missed is fine)."""
    config = root / "drsvc.toml"
    if not config.exists():
        (root / "key").write_text("00" * 32)
        config.write_text(
            f'policies_dir = "{root / "policies"}"\n[catalog]\npath = "{root / "catalog.db"}"\n'
            f'[keys]\nfile = "{root / "key"}"\n'
        )
    catalog = Catalog.open(root / "catalog.db")
    if recorded:
        record_tier_lag(catalog, lag)
    else:
        catalog.execute("DELETE FROM tier_lag")
    catalog.close()
    took = []
    for _ in range(rounds):
        t = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "drsvc", "--config", str(config), "--json", "status"], capture_output=True
        )
        took.append(time.perf_counter() - t)
        if p.returncode not in (0, 5):
            raise RuntimeError(f"drsvc status: exit {p.returncode}: {p.stderr.decode()[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--desktops", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=30, help="points per desktop")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--status", action="store_true", help="also time `drsvc --json status` (fresh processes)")
    ap.add_argument("--before", type=Path, help="also time the daemon's scrapes with the drsvc of this tree")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="drsvc-bench-metrics-"))
    try:
        t = time.perf_counter()
        db = build(root, args.desktops, args.points)
        print(f"catalog: {args.desktops:,} desktops, {args.desktops * args.points:,} points, built in "
              f"{time.perf_counter() - t:.0f} s")  # fmt: skip
        policies = load_policies([root / "policies"])
        catalog = Catalog.open(db)
        t = time.perf_counter()
        lag = tier_lag(catalog, policies, datetime.now(UTC))  # what the daemon's last tier run knows
        plan = time.perf_counter() - t
        daemon = metrics.registry(db, lambda: policies, lambda: lag)
        fresh = metrics.registry(db, lambda: policies)
        rows: dict[str, list[float]] = {}
        text = b""
        for _ in range(args.rounds):
            for name, reg, recorded in (
                ("daemon (tier lag from its last tier run)", daemon, True),
                ("textfile (tier lag the last tier run recorded)", fresh, True),
                ("textfile, no tier run recorded yet (plans tiering)", fresh, False),
            ):
                if recorded:
                    record_tier_lag(catalog, lag)
                else:
                    catalog.execute("DELETE FROM tier_lag")
                t = time.perf_counter()
                text = metrics.render(reg)
                rows.setdefault(f"drsvc /metrics, {name}", []).append(time.perf_counter() - t)
            series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
            plain = reference(series)
            t = time.perf_counter()
            generate_latest(plain)
            rows.setdefault(f"reference: prometheus_client, {series:,} plain series", []).append(
                time.perf_counter() - t
            )
        print(f"{'render':70} {'best':>8} {'median':>8}")
        for name, runs in rows.items():
            print(f"{name:70} {min(runs):7.3f}s {sorted(runs)[len(runs) // 2]:7.3f}s")
        print(
            f"tiering plan alone (the tier lag): {plan:.3f}s; exposition: {series:,} series, {len(text) / 1e6:.1f} MB"
        )
        catalog.close()
        if args.status:
            status = {
                "drsvc --json status (tier lag the last tier run recorded)": time_status(root, args.rounds, True, lag),
                "drsvc --json status, no tier run recorded yet (plans tiering)": time_status(
                    root, args.rounds, False, lag
                ),
            }
            for name, runs in status.items():
                print(f"{name:70} {min(runs):7.3f}s {sorted(runs)[len(runs) // 2]:7.3f}s")
        if args.before is not None:
            time_scrapes(root, args.rounds, args.before.resolve())
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
