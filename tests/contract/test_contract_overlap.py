"""Overlapping runs on the same desktop or store, in real processes.

One run is parked inside its work (``DRSVC_FAULT=POINT:wait=PATH``) while the other runs. The
second must be refused with one clear line (or wait its turn), and never corrupt or delete what
the first is using; once the first ends, everything it did is intact.
"""

from __future__ import annotations

from pathlib import Path

from contractlib import assert_exit
from deployment import Deployment, digests, volume_for
from waits import finish, wait_for

from drsvc import faults


def _park(deploy: Deployment, tmp_path: Path, point: str, *args: str) -> tuple[object, Path]:
    go = tmp_path / "go"
    proc = deploy.spawn(*args, **{faults.ENV: f"{point}:wait={go}"})
    wait_for(f"drsvc {args[0]} to reach {point}", Path(f"{go}.reached").exists)
    return proc, go


def _live(deploy: Deployment, desktop: str) -> dict[str, str]:
    return digests(deploy.world.read_volume("desktops", desktop))


def test_a_backup_of_a_desktop_being_restored_in_place_is_refused(deploy: Deployment, tmp_path: Path) -> None:
    deploy.desktop("alice", seed=3)
    assert_exit(deploy.cli("backup", "alice"), 0)
    deploy.world.write_volume("desktops", "alice", {"later": (b"work after the point", {}, {})})
    proc, go = _park(deploy, tmp_path, "after-restore-volume", "restore", "alice", "--force")
    r = deploy.cli("--json", "backup", "alice")
    go.touch()
    code, out, err = finish(proc, "the in-place restore")  # type: ignore[arg-type]
    assert code == 0, out + err
    assert r.code == 1 and "Traceback" not in r.output, r.output
    assert "restore" in r.output and "under way" in r.output, r.output
    points = deploy.cli("--json", "points", "list").json()
    assert [p["status"] for p in points].count("complete") == 1, "a point of a half-restored desktop"
    assert _live(deploy, "alice") == digests(volume_for(3, "alice"))


def test_an_in_place_restore_of_a_desktop_being_backed_up_is_refused(deploy: Deployment, tmp_path: Path) -> None:
    deploy.desktop("alice", seed=3)
    assert_exit(deploy.cli("backup", "alice"), 0)
    proc, go = _park(deploy, tmp_path, "after-freeze", "backup", "alice")
    r = deploy.cli("restore", "alice", "--force")
    go.touch()
    code, out, err = finish(proc, "the backup")  # type: ignore[arg-type]
    assert code == 0, out + err
    assert_exit(r, 1, "backup", "under way")
    statuses = [p["status"] for p in deploy.cli("--json", "points", "list").json()]
    assert statuses == ["complete", "complete"], statuses


def test_two_in_place_restores_of_one_desktop_one_is_refused(deploy: Deployment, tmp_path: Path) -> None:
    deploy.desktop("alice", seed=3)
    assert_exit(deploy.cli("backup", "alice"), 0)
    proc, go = _park(deploy, tmp_path, "after-restore-volume", "restore", "alice", "--force")
    r = deploy.cli("restore", "alice", "--force")
    go.touch()
    code, out, err = finish(proc, "the first restore")  # type: ignore[arg-type]
    assert code == 0, out + err
    assert_exit(r, 1, "restore", "under way")
    assert _live(deploy, "alice") == digests(volume_for(3, "alice"))


def test_two_tier_runs_one_is_refused(deploy: Deployment, tmp_path: Path) -> None:
    deploy.desktop("alice")
    from datetime import timedelta

    from drsvc import clock

    deploy.backup_at(clock.now() - timedelta(hours=2), "alice")
    proc, go = _park(deploy, tmp_path, "tier-after-packs", "tier")
    r = deploy.cli("tier")
    go.touch()
    code, out, err = finish(proc, "the first tier")  # type: ignore[arg-type]
    assert code == 0, out + err
    assert_exit(r, 1, "another drsvc run holds the 'work' lease")
    assert_exit(deploy.cli("restore", "alice", "--force", "--verify", "--tier", "cold"), 0)
