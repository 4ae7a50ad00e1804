"""Fleet dedup with per-tenant keys: drsvc's cold tier vs restic, per fleet and per tenant.

The fleet of ``bench/tiering.py`` (desktops cloned from one base: ``--fleet-shared`` of each is the
base's files, the rest the desktop's own), in two tenants (desktops alternate), stored four ways on
the lab's radosgw, in one run:

- drsvc, ``[keys] scope = "fleet"``: one key, dedup across the whole fleet; restic with one
  repository for the fleet is its reference;
- drsvc, per-tenant keys (the default): a data key per tenant, dedup inside a tenant only, so the
  base is stored once per tenant; restic with one repository (one password) per tenant -- the
  same isolation -- is its reference.

drsvc's bytes are its cold prefix after ``TierJob`` (packs, indexes, manifests, key records);
restic's its buckets after ``restic backup``. Times are the hot ingest + tier, and restic's backup.

    eval "$(dev/lab env)"; flock /tmp/drsvc-lab.lock .venv/bin/python bench/fleet_dedup.py
    .venv/bin/python bench/fleet_dedup.py --fleet-mib 16        # quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _lab import ENDPOINT, MiB, reference_tool
from tiering import Drsvc, bucket_bytes, drop_bucket, make_desktop, restic

TENANTS = ("acme", "globex")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fleet", type=int, default=10, help="desktops (default 10)")
    ap.add_argument("--fleet-mib", type=int, default=100, help="MiB per desktop (default 100)")
    ap.add_argument("--fleet-shared", type=float, default=0.7, help="shared fraction (default 0.7)")
    args = ap.parse_args()
    reference_tool("restic")
    import boto3

    client = boto3.client("s3", endpoint_url=ENDPOINT)
    run = uuid.uuid4().hex[:8]
    buckets = {"drsvc": f"bench-fd-drsvc-{run}", "restic": f"bench-fd-restic-{run}"}
    buckets.update({t: f"bench-fd-restic-{t}-{run}" for t in TENANTS})
    work = Path(tempfile.mkdtemp(prefix="drsvc-bench-fleet-"))
    deployments: list[Drsvc] = []
    try:
        base = work / "base-src"
        make_desktop(base, args.fleet_mib, seed=500)
        names = [f"f{i:02d}" for i in range(args.fleet)]
        tenant_of = {name: TENANTS[i % 2] for i, name in enumerate(names)}
        for i, name in enumerate(names):
            make_desktop(
                work / "desks" / name, args.fleet_mib, seed=600 + i, shared=base, shared_frac=args.fleet_shared
            )
        shutil.rmtree(base)
        fleet_bytes = sum(p.stat().st_size for p in (work / "desks").rglob("*") if p.is_file())
        for b in ("restic", *TENANTS):
            client.create_bucket(Bucket=buckets[b])
            restic(buckets[b], "init")

        stored: dict[str, int] = {}
        seconds: dict[str, float] = {}
        for scope in ("fleet", "tenant"):
            dep = Drsvc(work, scope, buckets["drsvc"], names)
            deployments.append(dep)
            t = time.perf_counter()
            for name in names:
                dep.ingest(name, work / "desks" / name, tenant_of[name] if scope == "tenant" else None)
            dep.tier()
            seconds[f"drsvc_{scope}"] = time.perf_counter() - t
            stored[f"drsvc_{scope}"] = bucket_bytes(client, buckets["drsvc"], f"{scope}/")
        t = time.perf_counter()
        for name in names:
            restic(buckets["restic"], "backup", "--host", name, ".", cwd=work / "desks" / name)
        seconds["restic_fleet"] = time.perf_counter() - t
        stored["restic_fleet"] = bucket_bytes(client, buckets["restic"])
        t = time.perf_counter()
        for name in names:
            restic(buckets[tenant_of[name]], "backup", "--host", name, ".", cwd=work / "desks" / name)
        seconds["restic_tenant"] = time.perf_counter() - t
        stored["restic_tenant"] = sum(bucket_bytes(client, buckets[t]) for t in TENANTS)

        print(
            f"fleet: {args.fleet} x {args.fleet_mib} MiB ({fleet_bytes / MiB:.0f} MiB, "
            f"{args.fleet_shared:.0%} shared), tenants {', '.join(TENANTS)} alternating"
        )
        print(f"{'':34}{'drsvc MiB':>11}{'restic MiB':>12}{'drsvc s':>9}{'restic s':>10}   stored <= restic")
        for scope, what in (("fleet", "one key / one repository"), ("tenant", "a key / a repository per tenant")):
            d, r = stored[f"drsvc_{scope}"], stored[f"restic_{scope}"]
            verdict = "met" if d <= r else "MISSED"
            print(
                f"{what:34}{d / MiB:11.1f}{r / MiB:12.1f}{seconds[f'drsvc_{scope}']:9.1f}"
                f"{seconds[f'restic_{scope}']:10.1f}   {verdict} ({d / r - 1:+.1%})"
            )
        print(f"per-tenant keys cost drsvc {stored['drsvc_tenant'] / stored['drsvc_fleet'] - 1:+.1%} stored bytes")
        print(json.dumps({"fleet_bytes": fleet_bytes, "stored": stored, "seconds": seconds}))
    finally:
        for dep in deployments:
            try:
                dep.cleanup()
            except Exception as e:
                print(f"cleanup {dep.hot_url}: {e}", file=sys.stderr)
        for name in buckets.values():
            try:
                drop_bucket(client, name)
            except Exception as e:
                print(f"cleanup bucket {name}: {e}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(Path(tempfile.gettempdir()) / "rc", ignore_errors=True)


if __name__ == "__main__":
    main()
