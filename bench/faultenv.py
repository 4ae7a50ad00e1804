"""The drsvc deployment the fault suite's trials run against (``bench/faults.py``, ``bench/faultops.py``).

One ``Env`` per bench run: its own hot and cold prefixes, a DR site bucket on the lab's second
radosgw (:7481), a fleet of desktops, one policy (``POLICY``) and the invariant checks every trial
ends with (``check_leftovers``, ``check_sound``, ``check_tracebacks``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from _lab import DRSVC, ROOT, config_text, purge_namespaces
from faultkit import Watcher, drsvc_snapshots

from drsvc.catalog import Catalog
from drsvc.crypto import generate_key_file

BUDGET = 3.0
# one policy name per bench run: its snapshot names (drsvc-POLICY-…) are this run's alone, never
# another run's in the shared pool (an earlier run whose clean-up failed, another engineer's)
POLICY = f"fsbench{uuid.uuid4().hex[:4]}"
SITE = "dr"  # the [sites.dr] of the config: the lab's second radosgw
NUMBERS: list[str] = []  # measured lines the summary prints after the table


class Violation(Exception):
    """An invariant that did not hold."""


class NotKilled(Exception):
    """A trial whose command finished before the kill (a random moment too late, a hit count never
    reached): not a kill trial, not counted."""


class Env:
    """A drsvc deployment on the lab for the trials: own hot prefix, cold prefix, desktops, policy."""

    def __init__(self, desktops: int, *, scope: str = "", runtime: str = "podman") -> None:
        self.runtime = runtime  # podman, or docker (its desktops on the lab's dockerd)
        tag = uuid.uuid4().hex[:6]
        self.prefix = f"failsafe-bench-{tag}"
        self.root = Path(tempfile.mkdtemp(prefix="drsvc-faults-"))
        (self.root / "policies").mkdir()
        generate_key_file(self.root / "drsvc.key")
        # the DR site: a bucket of its own on the second radosgw, another identity (streamed copies)
        self.site_bucket = f"{self.prefix}-dr"
        site = os.environ.get("DRSVC_DR_S3_ENDPOINT_URL")
        sites = (
            f'[sites.{SITE}]\nstore = "s3://{self.site_bucket}/fleet"\nendpoint_url = "{site}"\n'
            'credentials = "env:DRSVC_DR"\n'
            if site
            else ""
        )
        (self.root / "drsvc.toml").write_text(
            config_text(
                hot=f"rados://drsvc-hot/{self.prefix}", cold=f"s3://drsvc-cold/{self.prefix}", runtime=True, scope=scope
            )
            + "[scheduler]\nworkers = 2\nretries = 1\nlease_seconds = 60\ngc_grace_seconds = 0\n"
            "[timeouts]\nceph_seconds = 10\ns3_read_seconds = 10\ns3_attempts = 2\n" + sites
        )
        if runtime == "docker":
            text = (self.root / "drsvc.toml").read_text()
            podman = f'url = "podman://{os.environ["DRSVC_PODMAN_SOCKET"]}"'
            docker = f'url = "docker://{os.environ["DRSVC_DOCKER_SOCKET"]}"'
            (self.root / "drsvc.toml").write_text(text.replace(podman, docker))
        subprocess.run(
            [
                *(str(ROOT / "dev" / "lab"), "fleet", str(desktops), "--prefix", self.prefix),
                *("--data-mib", "2", "--runtime", runtime),
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        self.desktops = [f"{self.prefix}-{i:03d}" for i in range(1, desktops + 1)]
        doc = {
            "name": POLICY,
            "selector": {"desktops": self.desktops},
            "schedule": "0 * * * *",
            "timezone": "UTC",
            "capture": {"freeze_timeout": f"{BUDGET:g}s"},
            "retention": {"hot": {"last": 3}},
            "tiering": {"after": "1s", "storage_class": "STANDARD"},
        }
        if site:
            doc["sites"] = {SITE: {"after": "1s"}}
        (self.root / "policies" / f"{POLICY}.yaml").write_text(yaml.safe_dump(doc))
        self.stderr: list[str] = []
        self.namespaces: list[str] = []  # clones' namespaces a trial made besides the desktops' (purged at the end)

    # -------------------------------------------------------------- running drsvc
    def argv(self, *args: str) -> list[str]:
        return [DRSVC, "--config", str(self.root / "drsvc.toml"), *args]

    def run(self, *args: str, ok: tuple[int, ...] = (0,), env: dict[str, str] | None = None) -> tuple[int, str]:
        p = subprocess.run(self.argv(*args), capture_output=True, text=True, env=env, timeout=900)
        self.stderr.append(p.stderr)
        if p.returncode not in ok:
            raise Violation(f"drsvc {' '.join(args)} exit {p.returncode}: {p.stderr.strip()[-400:]}")
        return p.returncode, p.stdout

    def killed_at(self, point: str, *args: str) -> None:
        name, _, hit = point.partition("@")
        env = {**os.environ, "DRSVC_FAULT": f"{name}:kill" + (f"@{hit}" if hit else "")}
        p = subprocess.run(self.argv(*args), capture_output=True, text=True, env=env, timeout=900)
        self.stderr.append(p.stderr)
        if p.returncode == 0 and hit and int(hit) > 1:
            # an incremental run may upload fewer objects than the trial asks to count
            raise NotKilled(f"the run ended after fewer than {hit} hits of {name}")
        if p.returncode != -9:
            raise Violation(f"drsvc {' '.join(args)} never reached {point} (exit {p.returncode})")

    def killed_inside(self, point: str, *args: str, settle: float = 0.5) -> bool:
        """Run ``drsvc ARGS``, hold it at ``point`` (``wait``), let what it sent land (``settle`` s),
        then SIGKILL it from outside; False when it ended without reaching the point."""
        go = self.root / "go"
        go.unlink(missing_ok=True)
        reached = Path(f"{go}.reached")
        reached.unlink(missing_ok=True)
        env = {**os.environ, "DRSVC_FAULT": f"{point}:wait={go}"}
        proc = subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        while not reached.exists() and proc.poll() is None:
            time.sleep(0.005)
        if reached.exists():
            time.sleep(settle)
            proc.send_signal(signal.SIGKILL)
        self.stderr.append(proc.communicate(timeout=600)[1])
        return proc.returncode == -9

    def killed_after(self, seconds: float, *args: str) -> int:
        """Run ``drsvc ARGS`` and SIGKILL it after ``seconds``; its exit status (-9: killed)."""
        proc = subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(seconds)
        proc.send_signal(signal.SIGKILL)
        self.stderr.append(proc.communicate()[1])
        return proc.returncode

    def finished_clone(self, clone: str) -> bool:
        """Whether the restore as ``clone`` finished (its clone is the operator's, not a leftover)."""
        c = self.catalog()
        try:
            rows = c.query("SELECT status FROM restores WHERE as_name = ? ORDER BY id DESC LIMIT 1", [clone])
        finally:
            c.close()
        return bool(rows) and rows[0]["status"] in ("ok", "objective_missed")

    def drop_clone(self, clone: str) -> None:
        """Remove a clone a finished restore made (as an operator would), container and namespace."""
        from drsvc.volumes import open_volume

        subprocess.run(["podman", "rm", "-f", "-t", "0", clone], capture_output=True, timeout=120)
        open_volume(f"rados://desktops/{clone}").purge()

    def catalog(self) -> Catalog:
        return Catalog.open(self.root / "catalog.db")

    def complete(self) -> set[str]:
        c = self.catalog()
        try:
            return {p["id"] for p in c.points(status="complete")}
        finally:
            c.close()

    # -------------------------------------------------------------- invariants
    def check_tracebacks(self) -> None:
        for err in self.stderr:
            if "Traceback" in err:
                raise Violation("traceback: " + err.strip().splitlines()[-1][:300])
        self.stderr.clear()

    def check_leftovers(self) -> None:
        self.run("cleanup")
        c = self.catalog()
        try:
            live = {r["name"] for r in c.query("SELECT name FROM pool_snapshots WHERE removed_at IS NULL")}
            known = {r["name"] for r in c.query("SELECT name FROM pool_snapshots")}
            running = c.query("SELECT id FROM restores WHERE status = 'running'")
            drills = c.query("SELECT id FROM drills WHERE status = 'running'")
            objects = c.query("SELECT id FROM object_restores WHERE status = 'running'")
        finally:
            c.close()
        # the trials' own snapshots: the policy's, and manual ones (restore trials back up a single
        # desktop) this catalog ever recorded; other users' manual snapshots in the shared pool are not ours
        ours = {s for s in drsvc_snapshots() if s.startswith(f"drsvc-{POLICY}-") or s in known}
        if ours != live:
            raise Violation(f"leftover: pool snapshots {sorted(ours ^ live)[:3]}")
        if running:
            raise Violation(f"leftover: restores still running {running}")
        if drills:
            raise Violation(f"leftover: drills still recorded running {[r['id'] for r in drills]}")
        if objects:
            raise Violation(f"leftover: object restores still recorded running {[r['id'] for r in objects]}")
        clones = [n for n in _podman_names() if self.is_clone(n)]
        if clones:
            raise Violation(f"leftover: clone containers {clones}")
        code, _out = self.run("catalog", "check", ok=(0, 4))
        if code:
            raise Violation("leftover: catalog check exit 4")

    def is_clone(self, name: str) -> bool:
        """A container one of this run's restores or drills made (``-cloneN``, ``drill-ID-DESKTOP``)."""
        return (name.startswith(self.prefix) and "-clone" in name) or (
            name.startswith("drill-") and self.prefix in name
        )

    def check_sound(self) -> None:
        code, _out = self.run("verify", "--all", ok=(0, 4))
        if code:
            raise Violation("broken: verify --all found damaged complete points")

    def cleanup(self) -> None:
        if self.runtime == "docker":
            names = subprocess.run(
                ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60
            ).stdout.split()
            subprocess.run(
                ["docker", "rm", "-f", *[n for n in names if self.prefix in n]], capture_output=True, timeout=300
            )
        subprocess.run(
            ["podman", "rm", "-f", "-t", "0", *[n for n in _podman_names() if self.prefix in n]],
            capture_output=True,
            timeout=300,
        )
        c = self.catalog()
        try:
            snaps = c.query("SELECT pool, name FROM pool_snapshots WHERE removed_at IS NULL")
        finally:
            c.close()
        from drsvc.volumes import open_snapshots

        for s in snaps:
            for attempt in (1, 2, 3):
                try:
                    open_snapshots(s["pool"]).remove(s["name"])
                    break
                except Exception as e:  # said, not hidden: a snapshot left in the shared pool
                    if attempt == 3:
                        print(f"clean-up: pool snapshot {s['name']} not removed: {e!r}", flush=True)
                    time.sleep(1)
        purge_namespaces(self.desktops + self.namespaces)
        from drsvc.storage import open_store

        for url in (f"rados://drsvc-hot/{self.prefix}", f"s3://drsvc-cold/{self.prefix}"):
            try:
                store = (
                    open_store(url, endpoint_url=os.environ.get("S3_ENDPOINT_URL"))
                    if url.startswith("s3")
                    else open_store(url)
                )
                store.delete_many(list(store.list("")))
            except Exception:
                pass
        # radosgw-admin removes the site bucket whatever it holds (the S3 API needs it empty)
        subprocess.run(
            [
                *("radosgw-admin", "-c", os.environ["CEPH_CONF"], "bucket", "rm"),
                *("--bucket", self.site_bucket, "--purge-objects", "--bypass-gc"),
            ],
            capture_output=True,
            timeout=300,
        )


def _podman_names() -> list[str]:
    p = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60)
    return p.stdout.split()


@contextmanager
def watched(env: Env) -> Iterator[Watcher]:
    with Watcher(env.desktops) as w:
        yield w
    for d in env.desktops:
        if w.longest_still(d) > BUDGET + 0.5:
            raise Violation(f"frozen: {d} stood still {w.longest_still(d):.2f} s (budget {BUDGET:g} s)")
