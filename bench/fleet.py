"""Fleet throughput: ``drsvc backup --policy`` over N lab desktops, desktops per minute, per phase.

Through the real CLI (``drsvc`` in its own process, as the scheduler's minute runs it), on the lab:

1. ``dev/lab fleet N`` busybox desktops (Podman + CRIU, each desktop's data in its own RADOS
   namespace of the shared ``desktops`` pool, ``--data-mib`` each) and one policy covering them
   (``capture.freeze_batch``, ``scheduler.workers`` as given).
2. Per build, turns alternating: a first backup (a full read, no parent) and ``--rounds`` backups
   with nothing changed. Wall time, desktops per minute, and the run's phases (the backup job's
   ``phases``: ``drsvc.backup_commit.Phases``; a build without them shows ``-``), the CRIU
   checkpoints (sum) and freeze windows (median, max).
3. References in the same run: raw librados listing one namespace and all namespaces of the pool
   (what each backup's listing costs), and ``restic backup`` of the same desktops' data (exported
   to tmpfs files, one directory per desktop, one restic process over all of them, repository in
   tmpfs) first and unchanged.

``--before DIR`` (repeatable) adds a build: the drsvc tree in DIR (e.g. ``git archive REV drsvc |
tar -x -C DIR``), named after DIR, run with this venv's interpreter and ``PYTHONPATH=DIR``; each
build has its own catalog and hot prefix, and turns rotate, so all builds meet the same load.

    eval "$(dev/lab env)"
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/fleet.py                         # 50 desktops
    flock /tmp/drsvc-lab.lock .venv/bin/python bench/fleet.py --desktops 24 --before /tmp/drsvc-before

Everything it creates (containers ``fleet-NNN``, their namespaces, pool snapshots, hot prefixes,
temp dirs) is removed at the end unless ``--keep-fleet`` (containers and data stay for the next
run). Numbers are noisy on a shared 2-core machine: compare the columns of one run.
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
from pathlib import Path
from typing import Any

from _lab import ROOT, MiB, config_text, env, purge_namespaces, reference_tool, run

from drsvc.crypto import generate_key_file
from drsvc.storage import open_store

PREFIX = "fleet"
POOL = "desktops"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
PHASES = ("record", "freeze", "listing", "store", "scan", "volume", "image", "commit")


class Build:
    """One drsvc tree (this one, or ``--before``) with its own installation: config, key, catalog, hot prefix."""

    def __init__(
        self, label: str, tree: Path, work: Path, ids: list[str], args: argparse.Namespace, pipeline: bool = False
    ) -> None:
        self.label, self.tree = label, tree
        self.dir = work / label
        (self.dir / "policies").mkdir(parents=True)
        generate_key_file(self.dir / "drsvc.key")
        tag = uuid.uuid4().hex[:6]
        self.policy = f"fleetbench{tag}"  # pool snapshots are named after it: drsvc-<policy>-...
        self.hot_url = f"rados://drsvc-hot/{PREFIX}-{label}-{tag}"
        self.config = self.dir / "drsvc.toml"
        self.config.write_text(
            config_text(hot=self.hot_url, runtime=True)
            + f"[scheduler]\nworkers = {args.workers}\n"
            + ("pipeline = true\n" if pipeline else "")
        )
        (self.dir / "policies" / "fleet.yaml").write_text(
            json.dumps(
                {
                    "name": self.policy,
                    "selector": {"desktops": ids},
                    "schedule": "0 * * * *",
                    "capture": {"freeze_batch": args.freeze_batch},
                    "retention": {"hot": {"last": 100}},
                }
            )
        )
        self.env = {**os.environ, "PYTHONPATH": str(tree)}
        self.rounds: list[dict[str, Any]] = []

    def backup(self, kind: str) -> dict[str, Any]:
        t = time.perf_counter()
        p = subprocess.run(
            [PYTHON, "-m", "drsvc", "--config", str(self.config), "--json", "backup", "--policy", self.policy],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.dir,
            timeout=1800,
        )
        wall = time.perf_counter() - t
        if p.returncode not in (0, 6):
            raise RuntimeError(f"{self.label}: drsvc backup exited {p.returncode}: {p.stdout[-999:]} {p.stderr[-999:]}")
        doc = json.loads(p.stdout)
        results = doc["results"]
        freezes = [r["freeze_ms"] for r in results if r.get("freeze_ms") is not None]
        row = {
            "build": self.label,
            "kind": kind,
            "wall": wall,
            "per_min": len(results) / wall * 60,
            "complete": sum(r["status"] == "complete" for r in results),
            "paired": sum(r["status"] == "complete" and r["consistency"] == "paired" for r in results),
            "count": len(results),
            "checkpoint_s": sum(r.get("checkpoint_ms") or 0 for r in results) / 1000,
            "freeze_median_ms": statistics.median(freezes) if freezes else None,
            "freeze_max_ms": max(freezes) if freezes else None,
            "batches": len(doc.get("pool_snapshots") or []),
            "phases": doc.get("phases") or {},
            "new_mib": sum(r.get("new_bytes") or 0 for r in results) / MiB,
        }
        self.rounds.append(row)
        return row

    def cleanup(self, io: Any) -> None:
        try:
            # listed whole first: removing while the listing iterates skips snapshots
            for name in [snap.name for snap in io.list_snaps()]:
                if name.startswith(f"drsvc-{self.policy}-"):
                    io.remove_snap(name)
        except Exception as e:  # the bench's own leftovers: report, go on cleaning
            print(f"cleanup {self.label}: pool snapshots: {e}", file=sys.stderr)
        try:
            hot = open_store(self.hot_url)
            hot.delete_many(list(hot.list("")))
            hot.close()
        except Exception as e:
            print(f"cleanup {self.label}: hot prefix: {e}", file=sys.stderr)


def _rados() -> Any:
    import rados  # the lab's librados binding: on sys.path once _lab is imported

    return rados


def listing_reference(io: Any, namespace: str) -> dict[str, float]:
    """Raw librados: one namespace listed (a per-desktop listing), then every namespace at once."""
    io.set_namespace(namespace)
    t = time.perf_counter()
    one = sum(1 for _ in io.list_objects())
    per_namespace = time.perf_counter() - t
    io.set_namespace(_rados().LIBRADOS_ALL_NSPACES)
    t = time.perf_counter()
    everything = sum(1 for _ in io.list_objects())
    all_namespaces = time.perf_counter() - t
    io.set_namespace("")
    return {"one_namespace_s": per_namespace, "one_objects": one, "all_s": all_namespaces, "all_objects": everything}


def export(io: Any, ids: list[str], dest: Path) -> int:
    """Each desktop's objects as files under ``dest/<desktop>/`` (restic's input); bytes written."""
    total = 0
    for d in ids:
        io.set_namespace(d)
        for o in io.list_objects():
            try:  # a listing also names objects deleted since a pool snapshot (anyone's) that holds them
                size, _ = io.stat(o.key)
            except _rados().ObjectNotFound:
                continue
            data = io.read(o.key, size) if size else b""
            path = dest / d / o.key.replace("/", "%2F")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            total += len(data)
    io.set_namespace("")
    return total


def restic_backup(repo: Path, src: Path, cache: Path) -> float:
    env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(cache)}
    t = time.perf_counter()
    run("restic", "-r", str(repo), "backup", "--quiet", ".", cwd=src, env=env, timeout=1800)
    return time.perf_counter() - t


def show(rows: list[dict[str, Any]], restic: list[tuple[str, float]], desktops: int) -> None:
    print(f"\n{'':26}{'wall s':>8}{'/min':>7}{'ok':>6}{'ckpt s':>8}{'frz ms':>13}  phases (s)")
    for r in rows:
        frz = f"{r['freeze_median_ms'] or 0:.0f}/{r['freeze_max_ms'] or 0:.0f}"
        phases = "  ".join(f"{k} {r['phases'][k]:.1f}" for k in PHASES if k in r["phases"]) or "-"
        print(
            f"{r['build'] + ' ' + r['kind']:26}{r['wall']:8.1f}{r['per_min']:7.1f}"
            f"{str(r['paired']) + '/' + str(r['count']):>6}{r['checkpoint_s']:8.1f}{frz:>13}  {phases}"
        )
    for kind, seconds in restic:
        print(f"{'restic ' + kind:26}{seconds:8.1f}{desktops / seconds * 60:7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--desktops", type=int, default=50)
    ap.add_argument("--data-mib", type=float, default=4, help="RADOS data per desktop (default 4)")
    ap.add_argument("--rounds", type=int, default=1, help="unchanged backups per build after the first")
    ap.add_argument("--freeze-batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="[scheduler] workers (desktops stored in parallel)")
    ap.add_argument("--before", type=Path, action="append", default=[], help="another drsvc tree (repeatable)")
    ap.add_argument("--pipeline", action="store_true", help="also run this tree with [scheduler] pipeline = true")
    ap.add_argument("--no-restic", action="store_true", help="skip the restic reference")
    ap.add_argument("--keep-fleet", action="store_true", help="leave the containers and their data for the next run")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    ap.add_argument("--prefix", default=PREFIX, help=f"fleet container name prefix (default {PREFIX})")
    args = ap.parse_args()
    ids = [f"{args.prefix}-{i:03d}" for i in range(1, args.desktops + 1)]
    work = Path(tempfile.mkdtemp(prefix="drsvc-bench-fleet-"))
    shm = Path(tempfile.mkdtemp(prefix="drsvc-bench-fleet-", dir="/dev/shm"))
    cluster = _rados().Rados(conffile=env("CEPH_CONF"))
    cluster.connect(timeout=15)
    io = cluster.open_ioctx(POOL)
    builds: list[Build] = []
    try:
        t = time.perf_counter()
        lab = str(ROOT / "dev" / "lab")
        run(lab, "fleet", str(args.desktops), "--prefix", args.prefix, "--data-mib", str(args.data_mib))
        made = time.perf_counter() - t
        print(f"fleet: {args.desktops} busybox desktops x {args.data_mib:g} MiB ({made:.1f} s to create)")
        print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        ref = listing_reference(io, ids[0])
        print(
            f"librados listing of pool {POOL}: one namespace {ref['one_namespace_s']:.2f} s "
            f"({ref['one_objects']} objects), all namespaces {ref['all_s']:.2f} s ({ref['all_objects']} objects)"
        )
        builds = [Build(tree.resolve().name, tree.resolve(), work, ids, args) for tree in args.before]
        builds.append(Build("this", ROOT, work, ids, args))
        if args.pipeline:
            builds.append(Build("this-pipelined", ROOT, work, ids, args, pipeline=True))
        for turn, kind in enumerate(["first"] + [f"unchanged{r + 1}" for r in range(args.rounds)]):
            order = builds[turn % len(builds) :] + builds[: turn % len(builds)]
            for b in order:
                row = b.backup(kind)
                print(f"  {b.label} {kind}: {row['wall']:.1f} s, {row['per_min']:.1f} desktops/min", flush=True)
        restic: list[tuple[str, float]] = []
        if not args.no_restic and reference_tool("restic"):
            src, repo = shm / "src", shm / "repo"
            src.mkdir()
            exported = export(io, ids, src)
            run("restic", "-r", str(repo), "init", env={**os.environ, "RESTIC_PASSWORD": "bench"})
            restic.append(("first", restic_backup(repo, src, shm / "cache")))
            restic.append(("unchanged", restic_backup(repo, src, shm / "cache")))
            print(f"restic: {exported / MiB:.0f} MiB of the same objects as files in tmpfs, one process, repo in tmpfs")
        rows = [r for b in builds for r in b.rounds]
        rows.sort(key=lambda r: (r["kind"] != "first", r["kind"], r["build"]))
        show(rows, restic, args.desktops)
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if args.json:
            print(json.dumps({"desktops": args.desktops, "listing": ref, "rows": rows, "restic": restic}, indent=1))
    finally:
        for b in builds:
            b.cleanup(io)
        if not args.keep_fleet:
            subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], capture_output=True)
            purge_namespaces(ids, POOL)
        io.close()
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
