"""End to end, as a user waits: ``drsvc backup`` + ``tier`` and ``drsvc restore --as`` (cold and hot) vs restic.

Through the real CLI (each command in its own process), on the lab, beside restic in the same run,
on the same files (the mixed desktop set of ``bench/tiering.py``):

1. A lab desktop (``dev/lab fleet``, busybox, checkpointed with CRIU) holds the set as RADOS
   objects in its namespace; the same files lie in tmpfs for restic.
2. ``drsvc backup`` (a full read) + ``drsvc tier`` (to S3 on radosgw) beside ``restic backup``
   into an empty repository on the same radosgw.
3. ``--rounds`` times, turns alternating: ``drsvc restore --tier cold --as`` (a clone: volume
   written into a new RADOS namespace from S3, container restored from the checkpoint, health
   checked), ``drsvc restore --tier hot --as``, and ``restic restore latest`` into tmpfs. Every
   restored namespace is compared with the source files byte for byte (untimed), then removed.

Each drsvc row has wall seconds, the CPU seconds the process used (user + system: wall far above
CPU means it waited on round trips), and for restores the phases the restore report records
(``fetch`` of the checkpoint runs while ``volume`` is written). ``--profile DIR`` runs each drsvc
command under ``py-spy record --idle`` (install it into the venv: ``pip install py-spy``) and
prints where its threads spent their wall time, by the innermost drsvc function: the waits.
``--before TREE`` also restores each round with the drsvc package of another source tree (e.g.
``git archive REV drsvc | tar -x -C TREE``), the same point, turns alternating: before/after in
one run. ``--skip cold|hot`` leaves those restores out.

    eval "$(dev/lab env)"; flock /tmp/drsvc-lab.lock .venv/bin/python bench/e2e.py [--mib 512 --rounds 2]

Everything it creates is removed at the end. Numbers are noisy on a shared 2-core machine:
compare the columns of one run.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _lab import DRSVC, ROOT, MiB, show_medians
from incremental import Bench
from tiering import files_of

PYSPY = ROOT / ".venv" / "bin" / "py-spy"
RATE = 50  # py-spy samples per second


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class E2E(Bench):
    def __init__(self, work: Path, src: Path, profile: Path | None, before: Path | None = None) -> None:
        super().__init__(work, src)
        self.profile = profile
        self.before = before
        self.clones: list[str] = []

    def timed(self, step: str, *args: str, tree: Path | None = None) -> tuple[dict[str, Any], float, float]:
        """Run ``drsvc --json args``: its document, wall seconds, CPU seconds (or under py-spy).

        ``tree``: run the drsvc package of that source tree instead (``--before``)."""
        cmd = [DRSVC, "--config", str(self.config), "--json", *args]
        env = None
        if tree is not None:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            cmd = [sys.executable, "-m", "drsvc", *cmd[1:]]
        if self.profile is not None:
            out = self.profile / f"{step}.txt"
            spy = [str(PYSPY), "record", "--idle", "--threads", "-r", str(RATE), "-f", "raw", "-o", str(out)]
            cmd = [*spy, "--", *cmd]
        cpu = children_cpu()
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
        wall = time.perf_counter() - t
        cpu = children_cpu() - cpu
        if p.returncode not in (0, 5):
            raise RuntimeError(f"drsvc {' '.join(args[:4])}: exit {p.returncode}: {p.stderr[-2000:]}")
        start = p.stdout.find("{")  # py-spy prints its own lines after drsvc's document
        doc = json.JSONDecoder().raw_decode(p.stdout, start)[0] if start >= 0 else {}
        return doc, wall, cpu

    def backup_tier(self) -> dict[str, float]:
        doc, backup, cpu_b = self.timed("backup", "backup", "--policy", "bench")
        (result,) = doc["results"]
        assert result["status"] == "complete", result
        time.sleep(1.1)  # the policy's tiering.after
        _, tier, cpu_t = self.timed("tier", "tier")
        return {"total": backup + tier, "backup": backup, "tier": tier, "cpu": cpu_b + cpu_t}

    def restore(self, tier: str, k: int, tree: Path | None = None) -> dict[str, float]:
        clone = f"{self.prefix}-{tier}{k}{'b' if tree else ''}"
        self.clones.append(clone)
        step = f"restore-{tier}{k}{'-before' if tree else ''}"
        doc, wall, cpu = self.timed(step, "restore", self.desktop, "--tier", tier, "--as", clone, tree=tree)
        assert doc.get("status") in ("ok", "objective_missed"), doc
        self.check_clone(clone)
        self.drop_clone(clone)
        phases = {p: float(v) for p, v in doc["phases"].items()}
        return {"total": wall, "rto": float(doc["rto_seconds"]), "cpu": cpu, **phases}

    def check_clone(self, clone: str) -> None:
        """The clone's namespace holds exactly the source files (untimed)."""
        io = self.cluster.open_ioctx("desktops")
        io.set_namespace(clone)
        try:
            want = {str(p.relative_to(self.src)): p for p in files_of(self.src)}
            have = {o.key for o in io.list_objects()}
            assert have == set(want), f"{clone}: {len(set(want) - have)} missing, {len(have - set(want))} extra"
            for name, path in want.items():
                size = path.stat().st_size
                got = hashlib.sha256()
                for off in range(0, size, 64 * MiB):
                    got.update(io.read(name, min(64 * MiB, size - off), off))
                assert got.digest() == hashlib.sha256(path.read_bytes()).digest(), f"{clone}/{name} differs"
        finally:
            io.close()

    def drop_clone(self, clone: str) -> None:
        subprocess.run(["podman", "rm", "-f", "-t", "0", clone], capture_output=True, timeout=120)
        io = self.cluster.open_ioctx("desktops")
        io.set_namespace(clone)
        for o in list(io.list_objects()):
            io.remove_object(o.key)
        io.close()

    def restic_restore(self, scratch: Path) -> dict[str, float]:
        target = scratch / "restic-restore"
        shutil.rmtree(target, ignore_errors=True)
        t = time.perf_counter()
        self.restic("restore", "latest", "--target", str(target))
        total = time.perf_counter() - t
        shutil.rmtree(target, ignore_errors=True)
        return {"total": total}

    def cleanup(self) -> None:
        for clone in self.clones:
            self.drop_clone(clone)
        super().cleanup()


def where_waited(raw: Path, top: int = 10) -> list[str]:
    """py-spy raw (collapsed) stacks -> seconds by thread and innermost drsvc frame (idle pool workers and the
    lease's renewer left out): the main thread's rows are what the user waits on, the others what overlaps it."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not n.isdigit() or len(frames) < 2:
            continue
        thread = frames[0].partition(": ")[2].rstrip("0123456789_-") or "?"
        leaf = frames[-1].split(" (")[0]
        if thread.startswith("lease") or frames[-1].startswith("_worker (concurrent/futures/thread.py"):
            continue  # an idle pool worker waiting for work, or the lease's renewer
        ours = [f.split(" (")[0] for f in frames if "(drsvc/" in f]
        where = f"{ours[-1]} > {leaf}" if ours and ours[-1] != leaf else (ours[-1] if ours else leaf)
        counts[(thread, where)] += int(n)
    main = [(k, n) for k, n in counts.most_common() if k[0] == "MainThread"][:top]
    rest = [(k, n) for k, n in counts.most_common() if k[0] != "MainThread"][:top]
    return [f"{n / RATE:6.2f} s  {t[:16]:<16} {w[:110]}" for (t, w), n in main + rest]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=float, default=1024, help="size of the desktop data set")
    parser.add_argument("--rounds", type=int, default=2, help="restore rounds (each: cold, hot, restic)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", type=Path, help="sample each drsvc command with py-spy into this directory")
    parser.add_argument("--skip", action="append", default=[], choices=["cold", "hot"], help="skip these restores")
    parser.add_argument(
        "--before",
        type=Path,
        help="also restore with the drsvc package of this source tree (e.g. `git archive REV drsvc | tar -x -C DIR`), "
        "turns alternating, the same point",
    )
    args = parser.parse_args()
    if not shutil.which("restic"):
        sys.exit("restic is not installed (apt-get install -y restic): it is the reference")
    if args.profile is not None:
        if not PYSPY.exists():
            sys.exit(f"--profile needs py-spy in the venv ({ROOT}/.venv/bin/pip install py-spy)")
        args.profile.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="perf-e2e-bench-"))
    src = Path(tempfile.mkdtemp(prefix="perf-e2e-bench-src-", dir="/dev/shm"))
    bench = E2E(work, src, args.profile, args.before)
    try:
        written = bench.setup(args.mib, args.seed)
        print(f"desktop {bench.desktop}: {written / MiB:.0f} MiB in {len(files_of(src))} objects; "
              f"seconds (cpu: user + system of the drsvc processes); load {os.getloadavg()[0]:.1f}")  # fmt: skip
        first = {"drsvc backup + tier": [bench.backup_tier()], "restic backup": [bench.restic_round()]}
        show_medians("into S3, a full read", first, ("total", "backup", "tier", "cpu"), width=24)
        restores: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
        for k in range(args.rounds):
            for tier in [t for t in ("cold", "hot") if t not in args.skip]:
                restores[f"drsvc {tier} --as"].append(bench.restore(tier, k))
                if args.before is not None:
                    restores[f"  before: {tier} --as"].append(bench.restore(tier, k, args.before))
            restores["restic restore"].append(bench.restic_restore(src.parent / f"{src.name}-r"))
        show_medians("restore (drsvc: into a new RADOS namespace + container; restic: into tmpfs)", restores,
             ("total", "rto", "cpu", "plan", "fetch", "volume", "container", "health"), width=24)  # fmt: skip
        print(f"  load {os.getloadavg()[0]:.1f}")
        if args.profile is not None:
            for raw in sorted(args.profile.glob("*.txt")):
                print(f"\nwhere {raw.stem} spent its threads' time (py-spy, idle included)")
                print("\n".join(where_waited(raw)))
    finally:
        bench.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(src.parent / f"{src.name}-r", ignore_errors=True)


if __name__ == "__main__":
    main()
