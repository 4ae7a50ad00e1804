"""Backup freeze windows and restore RTO, phase by phase, on the real lab.

Cases (issue numbers in docs/benchmarks.md):
  a) a busybox desktop with 10 MiB of data;
  b) a desktop holding 200 MB of memory with 256 MiB of data in 2,000 objects.
For each: backup (freeze window, checkpoint time, total), restore from the hot tier, then, when
the config has a cold store, tier it and restore from the cold tier. Then a drill of 10 busybox
desktops with --parallel 2. Every number comes from drsvc's own --json output.

    eval "$(dev/lab env)"; .venv/bin/python bench/rto.py [--skip-drill] [--skip-cold]
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
from pathlib import Path
from typing import Any

from _lab import DRSVC, ROOT, env

IMAGE = "localhost/drsvc-desk:busybox"
COUNTER = (
    "B=$(cat /proc/sys/kernel/random/uuid); i=0; "
    'while true; do i=$((i+1)); echo "$i $B" > /data/counter; sleep 0.2; done'
)


def sh(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=check).stdout


def drsvc(config: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run([DRSVC, "--config", str(config), "--json", *args], capture_output=True, text=True)
    if out.returncode not in (0, 5, 6):
        raise SystemExit(f"drsvc {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def start_desktop(name: str, memory_mb: int) -> None:
    sh("podman", "rm", "-f", "--time", "0", name, check=False)
    hold = (
        f"dd if=/dev/urandom bs={memory_mb}M count=1 iflag=fullblock 2>/dev/null | sleep 1000000 & "
        if memory_mb
        else ""
    )
    sh(
        "podman",
        "run",
        "-d",
        "--name",
        name,
        "--label",
        f"drsvc.desktop={name}",
        "--label",
        f"drsvc.volume=rados://desktops/{name}",
        "--label",
        "drsvc.tenant=bench",
        IMAGE,
        "/bin/sh",
        "-c",
        hold + COUNTER,
    )
    if memory_mb:  # wait until the memory is really held
        for _ in range(300):
            rss = sh("podman", "top", name, "rss", check=False).split()[1:]
            if rss and max(int(x) for x in rss if x.isdigit()) >= memory_mb * 1024 * 0.95:
                break
            time.sleep(0.2)


def write_data(namespace: str, total_mib: int, objects: int) -> None:
    import rados

    cluster = rados.Rados(conffile=env("CEPH_CONF"))
    cluster.connect()
    io = cluster.open_ioctx("desktops")
    io.set_namespace(namespace)
    rng = random.Random(namespace)
    size = total_mib * 2**20 // objects
    completions = []
    for k in range(objects):
        data = rng.randbytes(size // 2) + bytes(size - size // 2)  # half random, half compressible
        completions.append(io.aio_write_full(f"obj-{k:05d}", data))
        if len(completions) >= 64:
            for c in completions:
                c.wait_for_complete_and_cb()
            completions = []
    for c in completions:
        c.wait_for_complete_and_cb()
    io.close()
    cluster.shutdown()


def purge(namespace: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import os, rados
c = rados.Rados(conffile=os.environ['CEPH_CONF']); c.connect(); io = c.open_ioctx('desktops')
io.set_namespace({namespace!r})
for o in list(io.list_objects()):
    try: io.remove_object(o.key)
    except rados.ObjectNotFound: pass
""",
        ],
        check=False,
    )


def row(label: str, doc: dict[str, Any]) -> str:
    phases = doc["phases"]
    cells = " ".join(f"{phases.get(p, 0):7.2f}" for p in ("plan", "fetch", "volume", "container", "health"))
    return f"{label:34} {cells} {doc['rto_seconds']:8.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-drill", action="store_true")
    ap.add_argument("--skip-cold", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="drsvc-bench-rto-"))
    config = root / "drsvc.toml"
    os.environ.pop("DRSVC_CONFIG", None)
    subprocess.run([DRSVC, "--config", str(config), "init"], check=True, capture_output=True)
    text = config.read_text().replace('store = "rados://drsvc-hot"', f'store = "rados://drsvc-hot/{root.name}"')
    text = text.replace('store = "s3://drsvc-cold/fleet"', f'store = "s3://drsvc-bench-{root.name[-8:].lower()}/rto"')
    config.write_text(text)
    (root / "policies").joinpath("bench.yaml").write_text(
        "name: bench\nselector: {tenant: bench}\nschedule: '0 * * * *'\ntimezone: UTC\n"
        "retention: {hot: {last: 10}}\ntiering: {after: 1s, storage_class: STANDARD}\n"
    )
    cold = not args.skip_cold and "[cold]" in text and (ROOT / "drsvc" / "tiering.py").exists()
    cases = [("a", "bench-a", 0, 10, 200), ("b", "bench-b", 200, 256, 2000)]
    lines = []
    try:
        for label, name, memory, data_mib, objects in cases:
            write_data(name, data_mib, objects)
            start_desktop(name, memory)
            time.sleep(1)
            t = time.perf_counter()
            backup = drsvc(config, "backup", name)
            backup_s = time.perf_counter() - t
            [r] = backup["results"]
            lines.append(
                f"backup {label}: freeze window {r['freeze_ms']:.0f} ms, checkpoint {r['checkpoint_ms']:.0f} ms, "
                f"{r['bytes'] / 2**20:.0f} MiB ({r['new_bytes'] / 2**20:.0f} MiB new), whole backup {backup_s:.2f} s"
            )
            again = drsvc(config, "backup", name)["results"][0]
            lines.append(
                f"backup {label} again: freeze {again['freeze_ms']:.0f} ms, "
                f"checkpoint {again['checkpoint_ms']:.0f} ms, "
                f"{again['new_bytes'] / 2**20:.1f} MiB new"
            )
            lines.append(row(f"restore {label} hot", drsvc(config, "restore", name, "--force")))
            if cold:
                drsvc(config, "tier")
                lines.append(row(f"restore {label} cold", drsvc(config, "restore", name, "--force", "--tier", "cold")))
            sh("podman", "rm", "-f", "--time", "0", name, check=False)
            purge(name)
        if not args.skip_drill:
            names = [f"bench-d{i:02d}" for i in range(10)]
            for n in names:
                write_data(n, 4, 100)
                start_desktop(n, 0)
            drsvc(config, "backup", *names)
            t = time.perf_counter()
            drill = drsvc(config, "drill", *names, "--parallel", "2")
            took = time.perf_counter() - t
            s = drill["summary"]
            lines.append(
                f"drill of 10 with --parallel 2: {took:.1f} s ({10 / took * 60:.0f} desktops/min), "
                f"{s['passed']}/{s['count']} passed, RTO p50 {s['rto_p50']:.2f} s p95 {s['rto_p95']:.2f} s "
                f"max {s['rto_max']:.2f} s"
            )
            for n in names:
                sh("podman", "rm", "-f", "--time", "0", n, check=False)
                purge(n)
    finally:
        print(f"{'':34} {'plan':>7} {'fetch':>7} {'volume':>7} {'contain':>7} {'health':>7} {'RTO s':>8}")
        print("\n".join(lines))
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
