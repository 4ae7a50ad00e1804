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
4. restic works on files, the desktop's data lives in RADOS: restic's rows also show
   ``rados_read`` and ``rados_write`` (timed apart) and ``with_rados`` (restic's time plus them),
   what any file-based tool pays to get the data there and back: raw librados aio (64 ops in
   flight, 8 MiB pieces) reading the desktop's objects into tmpfs files, and writing the files
   ``restic restore`` gave back into a new namespace (both checked byte for byte, untimed, then
   removed). restic's own ``total`` stays as it was: both comparisons are printed.

Each drsvc row has wall seconds, the CPU seconds the process used (user + system: wall far above
CPU means it waited on round trips), and for restores the phases the restore report records
(``fetch`` of the checkpoint runs while ``volume`` is written; within ``volume``, ``chunks_wait`` is the
writer waiting for verified chunks and ``writes`` submitting and waiting on RADOS; ``unmark``, the
clone's writer marks coming off, runs beside ``container`` and ``health``). ``--profile DIR`` runs each drsvc
command under ``py-spy record --idle`` (install it into the venv: ``pip install py-spy``; with
``E2E_PROFILE_CPU=1`` only threads on a CPU are sampled: where the CPU goes, not the waits) and
prints where its threads spent their wall time, by the innermost drsvc function: the waits.
``--before TREE`` also backs up + tiers and restores with the drsvc package of another source
tree (e.g. ``git archive REV drsvc | tar -x -C TREE``), turns alternating: before/after in one
run. ``--backups N`` takes N more ``backup`` + ``tier`` rounds (each tool, turns alternating), each
into a fresh installation (its own key, hot prefix and bucket: a full read that stores
everything, as the first round), removed after the round; every round reports the bytes it stored
in the hot store (RADOS) and the cold one (S3). ``--skip cold|hot`` leaves those restores out.
``--variant 'SETTING = VALUE'`` (with ``--backups``) adds a turn with this tree and that line in
``[cold]`` (e.g. ``recompress = false``) to each round, restored from cold unless ``--skip cold``.
``--chunk-kib N`` makes every installation with ``[hot] chunk_kib = N`` (a new hot store cutting N
KiB chunks on average; the cold store takes its parameters; a ``--before`` tree must know it).

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

from _lab import DRSVC, ROOT, MiB, byte_compile, config_text, env, reference_tool, show_medians
from incremental import Bench
from tiering import bucket_bytes, files_of

from drsvc.catalog import Catalog
from drsvc.crypto import generate_key_file

PYSPY = ROOT / ".venv" / "bin" / "py-spy"
RATE = 50  # py-spy samples per second


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def machine_idle() -> float:
    """Idle core-seconds of the whole machine so far (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def lab_cpu() -> float:
    """CPU seconds (user + system) the lab's OSD and radosgw daemons have used so far: on this machine
    they share the cores with drsvc and restic, so a restore's cost includes theirs."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, _, rest = stat.read_text().partition("(")[2].rpartition(")")
            if name in ("ceph-osd", "radosgw"):
                fields = rest.split()  # from the state on: utime and stime are the 12th and 13th
                total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


PIECE = 8 * MiB  # the floor's read and write size: large objects go in pieces, as drsvc's do
WINDOW = 64  # librados ops in flight, as drsvc's restore writer keeps


def aio_window(submits: Any, window: int = WINDOW) -> None:
    """Run librados aio submissions with at most ``window`` in flight; wait for all."""
    inflight: collections.deque[Any] = collections.deque()
    for submit in submits:
        inflight.append(submit())
        if len(inflight) >= window:
            inflight.popleft().wait_for_complete_and_cb()
    while inflight:
        inflight.popleft().wait_for_complete_and_cb()


def rados_read_floor(io: Any, files: dict[str, int], dest: Path) -> float:
    """Seconds to read ``files`` (object name -> size) from ``io``'s namespace into files under ``dest``
    with raw librados aio: what a file-based tool (restic) pays before it can back up a desktop whose
    data lives in RADOS. Data only, as restic's files are."""
    errors: list[str] = []
    fds: list[int] = []

    def piece(name: str, fd: int, off: int, length: int) -> Any:
        def done(_completion: Any, data: bytes) -> None:
            if len(data) != length:
                errors.append(f"{name}@{off}: {len(data)} of {length} bytes")
            os.pwrite(fd, data, off)

        return lambda: io.aio_read(name, length, off, done)

    def submits() -> Any:
        for name, size in files.items():
            path = dest / name
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            fds.append(fd)
            for off in range(0, size, PIECE):
                yield piece(name, fd, off, min(PIECE, size - off))

    t = time.perf_counter()
    try:
        aio_window(submits())
    finally:
        for fd in fds:
            os.close(fd)
    took = time.perf_counter() - t
    assert not errors, errors[:3]
    return took


def rados_write_floor(io: Any, root: Path) -> float:
    """Seconds to write every file under ``root`` as an object of ``io``'s namespace with raw librados
    aio (the first piece a full write, the rest at their offsets): what a file-based tool's restore
    (restic) pays after it, to put a desktop's data back where the desktop reads it."""

    def submits() -> Any:
        for path in files_of(root):
            name, data = str(path.relative_to(root)), path.read_bytes()
            yield lambda name=name, data=data: io.aio_write_full(name, data[:PIECE])
            for off in range(PIECE, len(data), PIECE):
                yield lambda name=name, data=data, off=off: io.aio_write(name, data[off : off + PIECE], off)

    t = time.perf_counter()
    aio_window(submits())
    return time.perf_counter() - t


class E2E(Bench):
    def __init__(
        self, work: Path, src: Path, profile: Path | None, before: Path | None = None, chunk_kib: int | None = None
    ) -> None:
        super().__init__(work, src, [])  # one installation: ``--before`` restores the same point with another tree
        build = self.builds[0]
        self.chunk_kib = chunk_kib
        build.config.write_text(self.with_chunk_size(build.config.read_text()))
        self.config, self.dir, self.hot_url, self.bucket = build.config, build.dir, build.hot_url, build.bucket
        self.profile = profile
        self.before = before
        self.clones: list[str] = []
        self.lab = 0.0  # the OSD's and radosgw's CPU seconds during the last timed command
        self.variant_restores: list[dict[str, float]] = []  # cold restores from the --variant installations

    def timed(
        self, step: str, *args: str, tree: Path | None = None, config: Path | None = None
    ) -> tuple[dict[str, Any], float, float]:
        """Run ``drsvc --json args``: its document, wall seconds, CPU seconds (or under py-spy).

        ``tree``: run the drsvc package of that source tree instead (``--before``); ``config``:
        another installation's (default: this bench's)."""
        cmd = [DRSVC, "--config", str(config or self.config), "--json", *args]
        env = None
        if tree is not None:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            # -P: without it ``-m`` puts the working directory first on sys.path, and run from a
            # checkout that is the checkout's own drsvc, not the tree's
            cmd = [sys.executable, "-P", "-m", "drsvc", *cmd[1:]]
        if self.profile is not None:
            out = self.profile / f"{step}.txt"
            idle = [] if os.environ.get("E2E_PROFILE_CPU") else ["--idle"]  # set: samples of threads on a CPU only
            # set: samples of the thread holding the GIL only (what runs serially in Python)
            gil = ["--gil"] if os.environ.get("E2E_PROFILE_GIL") else []
            spy = [str(PYSPY), "record", *idle, *gil, "--threads", "-r", str(RATE), "-f", "raw", "-o", str(out)]
            cmd = [*spy, "--", *cmd]
        cpu, lab, idle0 = children_cpu(), lab_cpu(), machine_idle()
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
        wall = time.perf_counter() - t
        cpu, self.lab = children_cpu() - cpu, lab_cpu() - lab
        if os.environ.get("E2E_CPU"):  # where the machine's cores went during each drsvc command
            print(f"  {step}: wall {wall:.2f} s, drsvc cpu {cpu:.2f} s, osd+rgw cpu {self.lab:.2f} s, "
                  f"idle {machine_idle() - idle0:.2f} core-s", file=sys.stderr)  # fmt: skip
        if p.returncode not in (0, 5):
            raise RuntimeError(f"drsvc {' '.join(args[:4])}: exit {p.returncode}: {p.stderr[-2000:]}")
        start = p.stdout.find("{")  # py-spy prints its own lines after drsvc's document
        doc = json.JSONDecoder().raw_decode(p.stdout, start)[0] if start >= 0 else {}
        return doc, wall, cpu

    def backup_tier(self, tree: Path | None = None, config: Path | None = None, tag: str = "") -> dict[str, float]:
        """``backup`` + ``tier`` of the desktop with ``config`` (default: this bench's), by ``tree``'s drsvc."""
        doc, backup, cpu_b = self.timed(f"backup{tag}", "backup", "--policy", "bench", tree=tree, config=config)
        (result,) = doc["results"]
        assert result["status"] == "complete", result
        time.sleep(1.1)  # the policy's tiering.after
        _, tier, cpu_t = self.timed(f"tier{tag}", "tier", tree=tree, config=config)
        return {"total": backup + tier, "backup": backup, "tier": tier, "cpu": cpu_b + cpu_t}

    def stored(self, hot_url: str, bucket: str) -> dict[str, float]:
        """MiB in the hot store (RADOS) and the cold one (S3) of an installation (untimed)."""
        from drsvc.storage import open_store

        hot = open_store(hot_url, conffile=env("CEPH_CONF"))
        try:
            hot_bytes = sum(hot.size(k) for k in hot.list(""))
        finally:
            hot.close()
        return {"hot_mib": hot_bytes / MiB, "cold_mib": bucket_bytes(self.s3, bucket) / MiB}

    def fresh_round(self, k: int, tree: Path | None, variant: str = "", restore: bool = False) -> dict[str, float]:
        """``backup`` + ``tier`` into a new installation (key, hot prefix, bucket) of the same desktop,
        by ``tree``'s drsvc (None: this tree's), with ``variant`` lines in its ``[cold]``; with
        ``restore`` a cold ``restore --as`` from it too (its row in ``self.variant_restores``); the
        installation is removed afterwards."""
        tag = f"x{k}{'b' if tree else ''}{'v' if variant else ''}"
        where = self.work / tag
        (where / "policies").mkdir(parents=True)
        shutil.copy(self.dir / "policies" / "bench.yaml", where / "policies" / "bench.yaml")
        generate_key_file(where / "drsvc.key")
        hot_url, bucket = f"rados://drsvc-hot/{self.prefix}-{tag}", f"{self.bucket}-{tag}"
        config = where / "drsvc.toml"
        text = config_text(hot=hot_url, cold=f"s3://{bucket}/fleet", runtime=True)
        text = self.with_chunk_size(text)  # --chunk-kib: a --before tree must know [hot] chunk_kib too
        config.write_text(text.replace("[runtime]\n", f"{variant}\n[runtime]\n"))  # [cold] comes just before
        try:
            row = self.backup_tier(tree, config, f"-{tag}")
            row.update(self.stored(hot_url, bucket))
            if restore:
                self.variant_restores.append(self.restore("cold", k, tree, config, tag=tag))
            return row
        finally:
            self.drop_installation(where, hot_url, bucket)

    def with_chunk_size(self, text: str) -> str:
        """A config text with ``[hot] chunk_kib`` when ``--chunk-kib`` was given."""
        if self.chunk_kib is None:
            return text
        return text.replace("[hot]\n", f"[hot]\nchunk_kib = {self.chunk_kib}\n", 1)

    def drop_installation(self, where: Path, hot_url: str, bucket: str) -> None:
        from drsvc.storage import open_store
        from drsvc.volumes import open_snapshots

        catalog = Catalog.open(where / "catalog.db")
        for row in catalog.query("SELECT pool, name FROM pool_snapshots WHERE removed_at IS NULL"):
            open_snapshots(row["pool"]).remove(row["name"])
        catalog.close()
        hot = open_store(hot_url, conffile=env("CEPH_CONF"))
        hot.delete_many(list(hot.list("")))
        hot.close()
        subprocess.run(
            ["radosgw-admin", "bucket", "rm", "--bucket", bucket, "--purge-objects", "--bypass-gc"],
            capture_output=True,
            timeout=300,
        )

    def restore(
        self, tier: str, k: int, tree: Path | None = None, config: Path | None = None, tag: str = ""
    ) -> dict[str, float]:
        clone = f"{self.prefix}-{tier}{k}{'b' if tree else ''}{tag}"
        self.clones.append(clone)
        step = f"restore-{tier}{k}{'-before' if tree else ''}{tag}"
        doc, wall, cpu = self.timed(
            step, "restore", self.desktop, "--tier", tier, "--as", clone, tree=tree, config=config
        )
        assert doc.get("status") in ("ok", "objective_missed"), doc
        self.check_clone(clone)
        self.drop_clone(clone)
        phases = {p: float(v) for p, v in doc["phases"].items()}
        # the volume phase's own breakdown, where the tree reports it: the writer waiting for verified
        # chunks, submitting and waiting on RADOS writes; the writer marks' removal (beside the container)
        detail = doc.get("checks", {}).get("volume_detail") or {}
        phases.update({k.removesuffix("_s"): float(v) for k, v in detail.items()})
        return {"total": wall, "rto": float(doc["rto_seconds"]), "cpu": cpu, "ceph": self.lab, **phases}

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

    def restic_fresh(self, k: int) -> dict[str, float]:
        """``restic backup`` into a fresh repository (then removed), as ``fresh_round`` for drsvc."""
        saved, self.restic_bucket = self.restic_bucket, f"{self.restic_bucket}-x{k}"
        try:
            self.restic("init")
            return self.restic_round()
        finally:
            subprocess.run(
                ["radosgw-admin", "bucket", "rm", "--bucket", self.restic_bucket, "--purge-objects", "--bypass-gc"],
                capture_output=True,
                timeout=300,
            )
            self.restic_bucket = saved

    def restic_restore(self, scratch: Path) -> dict[str, float]:
        target = scratch / "restic-restore"
        shutil.rmtree(target, ignore_errors=True)
        cpu, lab = children_cpu(), lab_cpu()
        t = time.perf_counter()
        self.restic("restore", "latest", "--target", str(target))
        total = time.perf_counter() - t
        cpu, lab = children_cpu() - cpu, lab_cpu() - lab
        floor = f"{self.prefix}-floor"  # the restored files written into RADOS: timed apart, then removed
        self.clones.append(floor)
        io = self.cluster.open_ioctx("desktops")
        io.set_namespace(floor)
        try:
            write = rados_write_floor(io, target)
        finally:
            io.close()
        self.check_clone(floor)
        self.drop_clone(floor)
        shutil.rmtree(target, ignore_errors=True)
        return {"total": total, "cpu": cpu, "ceph": lab, "rados_write": write, "with_rados": total + write}

    def rados_read(self, scratch: Path) -> float:
        """Seconds to read the desktop's objects from RADOS into tmpfs files (the floor restic's backup
        would start from), checked against the source files (untimed), then removed."""
        shutil.rmtree(scratch, ignore_errors=True)
        sizes = {str(p.relative_to(self.src)): p.stat().st_size for p in files_of(self.src)}
        try:
            took = rados_read_floor(self.io, sizes, scratch)
            for name in sizes:
                assert (scratch / name).read_bytes() == (self.src / name).read_bytes(), f"{name} read wrong"
            return took
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

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
    parser.add_argument(
        "--backups", type=int, default=0, help="more backup + tier rounds, each into a fresh installation"
    )
    parser.add_argument("--chunk-kib", type=int, help="this tree's new hot stores cut N KiB chunks on average")
    parser.add_argument("--skip", action="append", default=[], choices=["cold", "hot"], help="skip these restores")
    parser.add_argument(
        "--before",
        type=Path,
        help="also back up + tier and restore with the drsvc package of this source tree "
        "(e.g. `git archive REV drsvc | tar -x -C DIR`), turns alternating",
    )
    parser.add_argument(
        "--variant",
        default="",
        help="with --backups: also a turn of this tree with this line in [cold] (e.g. 'recompress = false')",
    )
    args = parser.parse_args()
    reference_tool("restic")
    if args.profile is not None:
        if not PYSPY.exists():
            sys.exit(f"--profile needs py-spy in the venv ({ROOT}/.venv/bin/pip install py-spy)")
        args.profile.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="perf-e2e-bench-"))
    src = Path(tempfile.mkdtemp(prefix="perf-e2e-bench-src-", dir="/dev/shm"))
    if args.before is not None:
        byte_compile(args.before)
    bench = E2E(work, src, args.profile, args.before, args.chunk_kib)
    try:
        written = bench.setup(args.mib, args.seed)
        print(f"desktop {bench.desktop}: {written / MiB:.0f} MiB in {len(files_of(src))} objects; "
              f"seconds (cpu: user + system of the drsvc processes); load {os.getloadavg()[0]:.1f}")  # fmt: skip
        first: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
        first["drsvc backup + tier"].append({**bench.backup_tier(), **bench.stored(bench.hot_url, bench.bucket)})
        restic = bench.restic_round()
        restic["rados_read"] = bench.rados_read(src.parent / f"{src.name}-x")
        first["restic backup"].append({**restic, "with_rados": restic["total"] + restic["rados_read"]})
        for k in range(args.backups + (1 if args.before is not None else 0)):
            turns: list[tuple[str, Path | None]] = [("drsvc backup + tier", None)]
            if args.before is not None:
                turns.append(("  before: backup + tier", args.before))
            if args.variant and k < args.backups:
                turns.append((f"  {args.variant}", None))
            if k < args.backups:
                turns.append(("restic backup", None))
            if k % 2:
                turns.reverse()
            for name, tree in turns:
                if name == "restic backup":
                    first[name].append(bench.restic_fresh(k))
                elif name == f"  {args.variant}":
                    first[name].append(bench.fresh_round(k, None, args.variant, restore="cold" not in args.skip))
                elif k < args.backups or tree is not None:
                    first[name].append(bench.fresh_round(k, tree))
        show_medians("into S3, a full read (MiB stored: hot, cold; restic: its repository)", first,
                     ("total", "backup", "tier", "cpu", "hot_mib", "cold_mib", "stored_mib", "rados_read",
                      "with_rados"), width=24)  # fmt: skip
        restores: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
        for k in range(args.rounds):
            for tier in [t for t in ("cold", "hot") if t not in args.skip]:
                restores[f"drsvc {tier} --as"].append(bench.restore(tier, k))
                if args.before is not None:
                    restores[f"  before: {tier} --as"].append(bench.restore(tier, k, args.before))
            restores["restic restore"].append(bench.restic_restore(src.parent / f"{src.name}-r"))
        if bench.variant_restores:
            restores[f"  {args.variant}: cold --as"] = bench.variant_restores
        show_medians("restore (drsvc: into a new RADOS namespace + container; restic: into tmpfs)", restores,
             ("total", "rto", "cpu", "ceph", "plan", "fetch", "volume", "chunks_wait", "writes", "unmark", "container",
              "health", "rados_write", "with_rados"), width=24)  # fmt: skip
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
        shutil.rmtree(src.parent / f"{src.name}-x", ignore_errors=True)


if __name__ == "__main__":
    main()
