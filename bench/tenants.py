"""Per-tenant keys vs the fleet scope: stored bytes and `drsvc backup` time of a real lab fleet.

A fleet of busybox desktops on the lab (``dev/lab fleet``: Podman + CRIU, each desktop's data in
its own RADOS namespace, ~40 % of it a base image shared by every desktop, tenants ``acme`` and
``globex`` alternating, one container image for all) is backed up by ``drsvc backup`` -- the
real entry point: checkpoint, pool snapshot, chunking, upload -- twice per round, once by an
installation with ``[keys] scope = "tenant"`` and once by one with ``scope = "fleet"``, each into
its own hot prefix, in alternating order. Stored bytes are what the hot prefix holds after each
round (every object listed and sized: chunks, manifests, image records, keys). Round 2 backs the
unchanged desktops up again (the cost of a backup when little changed).

    eval "$(dev/lab env)"
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/tenants.py                    # 10 desktops x 32 MiB
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/tenants.py --desktops 4 --data-mib 8   # quick

The fleet's containers, RADOS namespaces and hot prefixes are removed at the end (only this
script's: prefix ``chunks-bt``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from _lab import DRSVC, ROOT, MiB, config_text, purge_namespaces

from drsvc.crypto import generate_key_file
from drsvc.storage import open_store

PREFIX = "chunks-bt"


def lab(*args: str) -> None:
    subprocess.run([str(ROOT / "dev" / "lab"), *args], check=True, capture_output=True, text=True)


def remove_fleet(ids: list[str]) -> None:
    subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], capture_output=True)
    purge_namespaces(ids)


class Install:
    """One drsvc installation (config, key, catalog, hot prefix) with a given key scope."""

    def __init__(self, work: Path, scope: str) -> None:
        self.scope = scope
        self.dir = work / scope
        (self.dir / "policies").mkdir(parents=True)  # none: `drsvc backup` of named desktops needs no policy
        generate_key_file(self.dir / "drsvc.key")
        self.hot_url = f"rados://drsvc-hot/{PREFIX}-{scope}-{uuid.uuid4().hex[:6]}"
        (self.dir / "drsvc.toml").write_text(config_text(hot=self.hot_url, runtime=True, scope=scope))
        self.times: list[float] = []
        self.stored: list[tuple[int, int]] = []  # (bytes, objects) after each round

    def backup(self, ids: list[str]) -> float:
        t = time.perf_counter()
        p = subprocess.run(
            [DRSVC, "--config", str(self.dir / "drsvc.toml"), "--json", "backup", *ids], capture_output=True, text=True
        )
        seconds = time.perf_counter() - t
        if p.returncode != 0:
            raise RuntimeError(
                f"{self.scope}: drsvc backup exited {p.returncode}: {p.stdout[-2000:]} {p.stderr[-2000:]}"
            )
        self.times.append(seconds)
        return seconds

    def measure(self) -> tuple[int, int]:
        store = open_store(self.hot_url)
        try:
            keys = list(store.list())
            total = sum(store.size(k) for k in keys)
        finally:
            store.close()
        self.stored.append((total, len(keys)))
        return total, len(keys)

    def cleanup(self) -> None:
        store = open_store(self.hot_url)
        try:
            store.delete_many(list(store.list()))
        finally:
            store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--desktops", type=int, default=10)
    ap.add_argument("--data-mib", type=int, default=32, help="RADOS data per desktop (default 32)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1414)
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()
    ids = [f"{PREFIX}-{i:03d}" for i in range(1, args.desktops + 1)]
    work = Path(tempfile.mkdtemp(prefix="drsvc-bench-tenants-"))
    installs: list[Install] = []
    try:
        t = time.perf_counter()
        lab("fleet", str(args.desktops), "--prefix", PREFIX, "--data-mib", str(args.data_mib), "--seed", str(args.seed))
        made = time.perf_counter() - t
        print(f"fleet: {args.desktops} desktops x {args.data_mib} MiB, 2 tenants ({made:.1f} s to create)")
        installs = [Install(work, "tenant"), Install(work, "fleet")]
        for r in range(args.rounds):
            order = installs if r % 2 == 0 else installs[::-1]
            for inst in order:
                seconds = inst.backup(ids)
                total, n = inst.measure()
                stored = f"hot store {total / MiB:8.1f} MiB ({n} objects)"
                print(f"round {r + 1}  {inst.scope:<6} backup {seconds:6.1f} s   {stored}")
        tenant, fleet = installs
        print()
        print(f"{'':28}{'tenant':>12}{'fleet':>12}{'tenant/fleet':>14}")
        for r in range(args.rounds):
            tb, fb = tenant.stored[r][0], fleet.stored[r][0]
            print(f"{f'stored after round {r + 1} (MiB)':28}{tb / MiB:12.1f}{fb / MiB:12.1f}{tb / fb:14.2f}")
            tt, ft = tenant.times[r], fleet.times[r]
            print(f"{f'backup round {r + 1} (s)':28}{tt:12.1f}{ft:12.1f}{tt / ft:14.2f}")
        if args.json:
            print(
                json.dumps(
                    {
                        "desktops": args.desktops,
                        "data_mib": args.data_mib,
                        "results": {i.scope: {"seconds": i.times, "stored": i.stored} for i in installs},
                    }
                )
            )
    finally:
        for inst in installs:
            inst.cleanup()
        remove_fleet(ids)
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
