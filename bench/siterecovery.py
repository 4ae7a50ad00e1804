"""Whole-site recovery on the lab: admission control vs one by one vs everything at once; copy speed.

The fleet: 20 busybox desktops with 10 MiB of data each (policy priority 1, RTO target 30 s) and 3
desktops holding 200 MB of memory with 256 MiB of data in 2,000 objects (priority 50). They are
backed up, tiered and copied to the lab's second site (another radosgw endpoint and user, the
pool drsvc-dr-desktops). Each round then loses the primary (its containers removed, the DR pool
emptied, a DR config with a fresh catalog and none of the primary's stores) and runs
``drsvc site recover --from dr`` through the real CLI, once per mode, in turn:

* ``admission``  --parallel 4 with the [recovery] slots (3 downloads, 2 Ceph writes, 2 CRIU);
* ``serial``     --parallel 1 (a naive one-by-one loop);
* ``all``        --parallel 23 --no-admission (everything at once).

Reported per mode: time to all up (from the command's start, catalog rebuild included), the p50 /
p95 of every desktop's time up, the same for the 20 small desktops and how many of them were up
within their 30 s target. ``setup`` also times ``drsvc copy`` (primary radosgw to DR radosgw,
streamed: two identities) against a raw boto3 copy of the same objects with the same 4 workers.

    eval "$(dev/lab env)"
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/siterecovery.py setup     # ~4 min
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/siterecovery.py round     # ~3 min; repeat
    ... round --modes admission --recovery "ceph_writes = 4"   # [recovery] settings for a round
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/siterecovery.py copy      # copy vs raw boto3 again
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/siterecovery.py cleanup
    .venv/bin/python bench/siterecovery.py report                              # every round so far

State lives in /var/tmp/drsvc-bench-siterecovery (config, key, results.jsonl) between commands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _lab import DRSVC, ROOT, MiB, config_text, purge_namespaces
from rto import purge, start_desktop, write_data

STATE = Path(os.environ.get("DRSVC_BENCH_STATE", "/var/tmp/drsvc-bench-siterecovery"))
SMALL = [f"osb-{i:03d}" for i in range(1, 21)]
BIG = [f"osbig-{i}" for i in range(1, 4)]
COLD_BUCKET, DR_BUCKET, REF_BUCKET = "osbench-cold", "osbench-dr", "osbench-ref"
MODES = {
    "admission": ["--parallel", "4"],
    "serial": ["--parallel", "1", "--no-admission"],
    "all": ["--parallel", str(len(SMALL) + len(BIG)), "--no-admission"],
}


def sh(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=check).stdout


def drsvc(config: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run([DRSVC, "--config", str(config), "--json", *args], capture_output=True, text=True)
    if out.returncode not in (0, 5, 6):
        raise SystemExit(f"drsvc {' '.join(args)} failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout)


def site_section() -> str:
    return (
        f'[sites.dr]\nstore = "s3://{DR_BUCKET}/fleet"\nendpoint_url = "{os.environ["DRSVC_DR_S3_ENDPOINT_URL"]}"\n'
        f'credentials = "env:DRSVC_DR"\nrestore_pool = "rados://{os.environ["DRSVC_DR_POOL"]}"\n'
    )


def policies(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    common = "schedule: '0 * * * *'\nretention: {hot: {last: 3}}\ntiering: {after: 1s, storage_class: STANDARD}\n"
    (directory / "small.yaml").write_text(
        f"name: small\nselector: {{desktops: {json.dumps(SMALL)}}}\n{common}priority: 1\n"
        "objectives: {rto: 30s}\nsites: {dr: {after: 1s}}\n"
    )
    (directory / "big.yaml").write_text(
        f"name: big\nselector: {{desktops: {json.dumps(BIG)}}}\n{common}priority: 50\n"
        "objectives: {rto: 60s}\nsites: {dr: {after: 1s}}\n"
    )


def _client(dr: bool) -> Any:
    import boto3

    if dr:
        return boto3.client(
            "s3",
            endpoint_url=os.environ["DRSVC_DR_S3_ENDPOINT_URL"],
            aws_access_key_id=os.environ["DRSVC_DR_ACCESS_KEY_ID"],
            aws_secret_access_key=os.environ["DRSVC_DR_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
    return boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], region_name="us-east-1")


def raw_copy(keys: list[str]) -> tuple[int, float]:
    """The reference: the same objects, primary radosgw -> DR radosgw, boto3 get/put on 4 threads."""
    src, dst = _client(False), _client(True)
    with contextlib.suppress(dst.exceptions.BucketAlreadyOwnedByYou):
        dst.create_bucket(Bucket=REF_BUCKET)

    def one(key: str) -> int:
        body = src.get_object(Bucket=COLD_BUCKET, Key=key)["Body"].read()
        dst.put_object(Bucket=REF_BUCKET, Key=key, Body=body)
        return len(body)

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(one, keys))
    return total, time.perf_counter() - started


def setup() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    primary = STATE / "primary"
    config = primary / "drsvc.toml"
    os.environ.pop("DRSVC_CONFIG", None)
    if not config.exists():
        primary.mkdir(parents=True, exist_ok=True)
        subprocess.run([DRSVC, "--config", str(config), "init"], check=True, capture_output=True)
        text = config.read_text()
        text = text.replace('store = "rados://drsvc-hot"', 'store = "rados://drsvc-hot/osbench"')
        text = text.replace('store = "s3://drsvc-cold/fleet"', f'store = "s3://{COLD_BUCKET}/fleet"')
        config.write_text(text + site_section())
    policies(primary / "policies")
    t = time.perf_counter()
    sh(str(ROOT / "dev" / "lab"), "fleet", str(len(SMALL)), "--prefix", "osb", "--data-mib", "10")
    for name in BIG:
        write_data(name, 256, 2000)
        start_desktop(name, 200)
    print(f"fleet ready in {time.perf_counter() - t:.1f} s")
    drsvc(config, "desktops", "discover")
    for policy in ("small", "big"):
        t = time.perf_counter()
        doc = drsvc(config, "backup", "--policy", policy)
        ok = sum(r["status"] == "complete" for r in doc["results"])
        print(f"backup {policy}: {ok}/{len(doc['results'])} complete in {time.perf_counter() - t:.1f} s")
    time.sleep(1.5)
    t = time.perf_counter()
    tier = drsvc(config, "tier")
    print(
        f"tier: {tier['summary']['done']} points, {tier['summary']['bytes_uploaded'] / MiB:.0f} MiB in "
        f"{time.perf_counter() - t:.1f} s"
    )
    t = time.perf_counter()
    copy = drsvc(config, "copy")
    took = time.perf_counter() - t
    copied = copy["summary"]["bytes_copied"]
    print(
        f"drsvc copy: {copy['summary']['done']} points, {copied / MiB:.0f} MiB in {took:.1f} s = "
        f"{copied / MiB / took:.1f} MiB/s ({copy['modes']})"
    )
    print(f"  where the time went: {copy['timings']}")
    dr = _client(True)
    keys = []
    for page in dr.get_paginator("list_objects_v2").paginate(Bucket=DR_BUCKET, Prefix="fleet/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    total, raw = raw_copy(keys)
    print(
        f"raw boto3 get/put of the same {len(keys)} objects: {total / MiB:.0f} MiB in {raw:.1f} s = "
        f"{total / MiB / raw:.1f} MiB/s"
    )
    with (STATE / "results.jsonl").open("a") as f:
        f.write(
            json.dumps(
                {
                    "copy": {
                        "bytes": copied,
                        "seconds": took,
                        "raw_bytes": total,
                        "raw_seconds": raw,
                        "objects": len(keys),
                        "modes": copy["modes"],
                    }
                }
            )
            + "\n"
        )


def _empty(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def copy_round() -> None:
    """drsvc copy and the raw boto3 copy again, each into an emptied bucket (taking turns first)."""
    import sqlite3

    config = STATE / "primary" / "drsvc.toml"
    dr = _client(True)
    results = []
    keys: list[str] = []
    for first in ("drsvc", "raw"):
        order = ["drsvc", "raw"] if first == "drsvc" else ["raw", "drsvc"]
        for tool in order:
            if tool == "drsvc":
                _empty(dr, DR_BUCKET)
                with sqlite3.connect(STATE / "primary" / "catalog.db") as db:
                    db.execute("DELETE FROM point_sites")
                    db.execute("DELETE FROM cold_locks WHERE store_url LIKE ?", [f"s3://{DR_BUCKET}%"])
                t = time.perf_counter()
                doc = drsvc(config, "copy")
                took = time.perf_counter() - t
                copied = doc["summary"]["bytes_copied"]
                results.append(("drsvc copy", copied, took, doc["timings"]))
                keys = []  # the same objects for the reference: what drsvc put at the site
                for page in dr.get_paginator("list_objects_v2").paginate(Bucket=DR_BUCKET):
                    keys += [o["Key"] for o in page.get("Contents", [])]
            else:
                _empty(dr, REF_BUCKET)
                total, raw = raw_copy(keys)
                results.append(("raw boto3", total, raw, {}))
    for tool, size, took, timings in results:
        print(f"{tool:10} {size / MiB:7.0f} MiB in {took:5.1f} s = {size / MiB / took:6.1f} MiB/s {timings or ''}")
    with (STATE / "results.jsonl").open("a") as f:
        f.write(json.dumps({"copy_round": [r[:3] for r in results]}) + "\n")


def lose_primary() -> None:
    """Every desktop's container gone, the DR pool empty: the state a recovery starts from."""
    names = SMALL + BIG
    subprocess.run(["podman", "rm", "-f", "-t", "0", *names], capture_output=True)
    import rados

    cluster = rados.Rados(conffile=os.environ["CEPH_CONF"])
    cluster.connect()
    io = cluster.open_ioctx(os.environ["DRSVC_DR_POOL"])
    io.set_namespace(rados.LIBRADOS_ALL_NSPACES)
    victims = [(o.nspace, o.key) for o in io.list_objects() if o.nspace in names]
    for ns, key in victims:
        io.set_namespace(ns)
        with contextlib.suppress(rados.ObjectNotFound):
            io.remove_object(key)
    io.close()
    cluster.shutdown()


def dr_config(recovery: str = "") -> Path:
    site = STATE / "dr"
    shutil.rmtree(site, ignore_errors=True)
    policies(site / "policies")
    shutil.copy2(STATE / "primary" / "drsvc.key", site / "drsvc.key")
    config = site / "drsvc.toml"
    config.write_text(
        config_text(runtime=True)
        + site_section()
        + (f"[recovery]\n{recovery.replace(',', chr(10))}\n" if recovery else "")
    )
    return config


def summarize(doc: dict[str, Any], wall: float) -> dict[str, Any]:
    items = doc["desktops"]
    up = [d["up_seconds"] for d in items if d["status"] in ("ok", "objective_missed")]
    small = [d for d in items if d["desktop"] in SMALL]
    small_up = [d["up_seconds"] for d in small if d["status"] in ("ok", "objective_missed")]

    def pct(values: list[float], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return ordered[max(0, -(-len(ordered) * q // 100) - 1)] if q < 100 else ordered[-1]

    return {
        "wall": wall,
        "up": len(up),
        "all_up": doc["summary"]["all_up_seconds"],
        "p50": pct(up, 50),
        "p95": pct(up, 95),
        "small_all_up": max(small_up) if len(small_up) == len(SMALL) else None,
        "small_p50": pct(small_up, 50),
        "small_p95": pct(small_up, 95),
        "small_within_30s": sum(1 for d in small if d["up_seconds"] is not None and d["up_seconds"] <= 30),
        "catalog_seconds": doc["prepare"].get("catalog_seconds"),
        "failed": [f"{d['desktop']}: {d['error']}" for d in items if d["status"] == "failed"],
        "waited": (doc["admission"] or {}).get("waited_seconds"),
    }


def round_(modes: list[str], recovery: str = "") -> None:
    results = {}
    for mode in modes:
        lose_primary()
        config = dr_config(recovery)
        t = time.perf_counter()
        doc = drsvc(config, "site", "recover", "--from", "dr", *MODES[mode])
        name = mode + (f"[{recovery}]" if recovery else "")
        results[name] = summarize(doc, time.perf_counter() - t)
        print(name, json.dumps(results[name]))
    with (STATE / "results.jsonl").open("a") as f:
        f.write(json.dumps({"round": results, "at": time.strftime("%H:%M:%S")}) + "\n")


def report() -> None:
    rounds = []
    for line in (STATE / "results.jsonl").read_text().splitlines():
        doc = json.loads(line)
        if "copy_round" in doc:
            for tool, size, took in doc["copy_round"]:
                print(f"copy round: {tool:10} {size / MiB / took:6.1f} MiB/s ({size / MiB:.0f} MiB)")
        elif "copy" in doc:
            c = doc["copy"]
            print(
                f"copy site to site: drsvc {c['bytes'] / MiB / c['seconds']:.1f} MiB/s ({c['bytes'] / MiB:.0f} MiB, "
                f"{c['modes']}); raw boto3 {c['raw_bytes'] / MiB / c['raw_seconds']:.1f} MiB/s "
                f"({c['raw_bytes'] / MiB:.0f} MiB, {c['objects']} objects)"
            )
        else:
            rounds.append(doc["round"])
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    print(
        f"{'mode':10} {'all up':>7} {'p50':>6} {'p95':>6} | {'20 small: all':>13} {'p50':>6} {'p95':>6} "
        f"{'<=30s':>5} | wall"
    )
    for n, r in enumerate(rounds, 1):
        for mode, s in r.items():
            failed = f"; failed: {s['failed']}" if s["failed"] else ""
            print(
                f"{mode:10} {fmt(s['all_up']):>7} {fmt(s['p50']):>6} {fmt(s['p95']):>6} | "
                f"{fmt(s['small_all_up']):>13} {fmt(s['small_p50']):>6} {fmt(s['small_p95']):>6} "
                f"{s['small_within_30s']:>5} | {s['wall']:.1f}  (round {n}{failed})"
            )
    if rounds:
        for mode in MODES:
            values = [r[mode]["all_up"] for r in rounds if mode in r and r[mode]["all_up"] is not None]
            if values:
                print(f"median all up, {mode}: {statistics.median(values):.1f} s over {len(values)} round(s)")


def cleanup() -> None:
    lose_primary()
    for name in BIG:
        purge(name)
    purge_namespaces(SMALL)
    for bucket in (COLD_BUCKET, DR_BUCKET, REF_BUCKET):
        sh(
            "radosgw-admin",
            "-c",
            os.environ["CEPH_CONF"],
            "bucket",
            "rm",
            "--bucket",
            bucket,
            "--purge-objects",
            "--bypass-gc",
            check=False,
        )
    catalog = STATE / "primary" / "catalog.db"
    if catalog.exists():
        from drsvc.catalog import Catalog
        from drsvc.storage import open_store
        from drsvc.volumes import open_snapshots

        c = Catalog.open(catalog)
        for row in c.query("SELECT pool, name FROM pool_snapshots WHERE removed_at IS NULL"):
            open_snapshots(row["pool"]).remove(row["name"])
        store = open_store("rados://drsvc-hot/osbench")
        store.delete_many(list(store.list("")))
    shutil.rmtree(STATE / "primary", ignore_errors=True)
    shutil.rmtree(STATE / "dr", ignore_errors=True)
    print("cleaned up (results.jsonl kept)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["setup", "round", "copy", "report", "cleanup"])
    ap.add_argument("--modes", default="admission,serial,all", help="comma-separated, in this order")
    ap.add_argument("--recovery", default="", help='[recovery] settings for the round, e.g. "ceph_writes = 4"')
    args = ap.parse_args()
    if args.step == "setup":
        setup()
    elif args.step == "round":
        round_(args.modes.split(","), args.recovery)
    elif args.step == "copy":
        copy_round()
    elif args.step == "report":
        report()
    else:
        cleanup()


if __name__ == "__main__":
    main()
