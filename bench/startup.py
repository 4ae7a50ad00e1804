"""CLI start-up: what every cron minute pays, before and after the lazy CLI and the extras split.

Times three commands end to end as separate processes, and reads each one's peak memory
(ru_maxrss from wait4):

- ``drsvc --help``
- ``drsvc points list`` over a catalog of N points (default 1,000,000; output to /dev/null)
- ``drsvc run --once`` with nothing due (every policy window already ran)

for these builds, in rounds that alternate between them:

- ``before``: the tree at ``--before`` (default 1bebca9, the last commit before the packaging
  move), run with this venv's Python (every dependency was mandatory then);
- ``dev``: this tree in this venv (every extra installed, so matplotlib's numpy is importable);
- ``core``: the wheel of this tree in a fresh venv without extras (what ``pip install drsvc`` gives).

References in the same run: the bare interpreter (``python -c pass``) and ``restic --help`` (a Go
binary, the reference backup tool). No lab needed.

    .venv/bin/python bench/startup.py [--points 1000000] [--rounds 3] [--before REV] [--no-core]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _lab import ROOT

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.crypto import generate_key_file

LAUNCH = "import sys; from drsvc.cli.main import main; sys.argv[0] = 'drsvc'; main()"


def measure(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one run, output discarded.

    Peak memory comes from GNU time (%M), not from this process's wait4: a child forked from this
    big process counts the parent's pages until it execs.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        t = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", out.name, *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            check=False,
        )
        wall = time.perf_counter() - t
        peak_kib = int(out.read().split()[-1])
    return wall, peak_kib / 1024, done.returncode


def build_catalog(root: Path, points: int, desktops: int = 1000) -> Path:
    """A config, a policy every desktop falls under, and a catalog where its window already ran."""
    (root / "policies").mkdir(parents=True)
    generate_key_file(root / "drsvc.key")
    (root / "policies" / "hourly.yaml").write_text(
        "name: hourly\nselector: {labels: {tier: std}}\nschedule: '0 * * * *'\nretention: {hot: {last: 24}}\n"
    )
    (root / "drsvc.toml").write_text(
        'policies_dir = "policies"\n[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n'
    )
    catalog = Catalog.open(root / "catalog.db")
    now = datetime.now(UTC)
    stamp = clock.to_iso(now)
    ids = [f"d{i:04d}" for i in range(desktops)]
    with catalog.transaction():
        catalog.db.conn.executemany(
            "INSERT INTO desktops (id, runtime_url, container, volume, tenant, labels, first_seen, last_seen) "
            "VALUES (?, 'podman:///run/podman/podman.sock', ?, ?, NULL, '{\"tier\": \"std\"}', ?, ?)",
            [(d, d, f"rados://desktops/{d}", stamp, stamp) for d in ids],
        )
    for start in range(0, points, 100_000):
        rows = []
        for k in range(start, min(points, start + 100_000)):
            taken = clock.to_iso(now - timedelta(hours=k // desktops))
            rows.append((f"{ids[k % desktops]}-{k:07d}", ids[k % desktops], taken, stamp))
        with catalog.transaction():
            catalog.db.conn.executemany(
                "INSERT INTO points (id, desktop_id, policy, taken_at, status, consistency, bytes, created_at) "
                "VALUES (?, ?, 'hourly', ?, 'complete', 'paired', 1048576, ?)",
                rows,
            )
    window = clock.to_iso(now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))
    for purpose in ("backup", "drill", "verify"):
        catalog.execute(
            "INSERT INTO schedule_state (policy, purpose, last_window, last_run_at) VALUES ('hourly', ?, ?, ?)",
            [purpose, window, stamp],
        )
    catalog.close()
    return root / "drsvc.toml"


def old_tree(rev: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def core_venv(dest: Path) -> Path:
    """A venv with the wheel of this tree and no extras; returns its python."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest / "dist"), str(ROOT)], check=True
    )
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(dest / "venv")], check=True)
    py = dest / "venv" / "bin" / "python"
    (wheel,) = (dest / "dist").glob("drsvc-*.whl")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], check=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", default="1bebca9")
    ap.add_argument("--list-rounds", type=int, default=1, help="Rounds of the full listings (slow).")
    ap.add_argument("--no-core", action="store_true", help="Skip the core-install venv (saves a minute).")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="drsvc-bench-startup-"))
    try:
        t = time.perf_counter()
        config = build_catalog(root / "fleet", args.points)
        print(f"catalog: {args.points:,} points over 1,000 desktops, built in {time.perf_counter() - t:.0f} s")
        base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DRSVC_CONFIG")}
        old = old_tree(args.before, root / "before")
        builds: dict[str, tuple[list[str], dict[str, str]]] = {
            f"before ({args.before})": ([sys.executable, "-c", LAUNCH], {**base_env, "PYTHONPATH": str(old)}),
            "dev (all extras)": ([sys.executable, "-c", LAUNCH], base_env),
        }
        if not args.no_core:
            builds["core (no extras)"] = ([str(core_venv(root / "core")), "-c", LAUNCH], base_env)
        commands = {
            "--help": ["--help"],
            "points list --limit 100": ["--config", str(config), "points", "list", "--limit", "100"],
            f"points list ({args.points:,})": ["--config", str(config), "points", "list"],
            f"--json points list ({args.points:,})": ["--config", str(config), "--json", "points", "list"],
            "run --once, nothing due": ["--config", str(config), "run", "--once"],
        }
        refs = {"python -c pass": [sys.executable, "-c", "pass"]}
        if shutil.which("restic"):
            refs["restic --help"] = ["restic", "--help"]
        results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
        full = {label for label, argv in commands.items() if argv[-1] == "list"}  # minutes each: once
        for round_no in range(args.rounds):
            for name, cmd in refs.items():
                results.setdefault(("reference", name), []).append(measure(cmd, base_env))
            for label, argv in commands.items():
                if label in full and round_no >= args.list_rounds:
                    continue
                for build, (prefix, env) in builds.items():
                    results.setdefault((build, label), []).append(measure([*prefix, *argv], env, cwd=root))
        print(f"{'build':22} {'command':32} {'wall best':>9} {'median':>8} {'peak RSS':>9}  exit")
        for (build, label), runs in results.items():
            walls = sorted(r[0] for r in runs)
            print(
                f"{build:22} {label:32} {walls[0]:8.3f}s {walls[len(walls) // 2]:7.3f}s "
                f"{max(r[1] for r in runs):7.1f}Mi  {','.join(sorted({str(r[2]) for r in runs}))}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
