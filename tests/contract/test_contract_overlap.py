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


def test_prune_keeps_a_point_a_restore_began_reading_after_prune_planned(deploy: Deployment, tmp_path: Path) -> None:
    """prune plans to drop the two older points and is parked after dropping the first; a restore
    of the second begins (its point-read recorded after prune's plan); prune goes on and must keep
    that point, and the restore must finish from it."""
    from datetime import timedelta

    from drsvc import clock

    deploy.policy(retention={"hot": {"last": 1}}, tiering=None)
    deploy.desktop("alice", seed=4)
    start = clock.now() - timedelta(hours=4)
    ids = [deploy.backup_at(start + timedelta(hours=h), "alice")[0] for h in range(3)]
    pruning, go_prune = _park(deploy, tmp_path, "prune-after-drop", "prune")
    hot = {p["id"] for p in deploy.cli("--json", "points", "list", "alice").json() if p["tiers"]}
    (reading,) = hot - {ids[2]}  # planned to go, not dropped yet
    (gone,) = set(ids) - hot
    go = tmp_path / "go-restore"
    restoring = deploy.spawn(
        "restore", "alice", "--point", reading, "--as", "alice-old", **{faults.ENV: f"mid-restore-volume:wait={go}"}
    )
    wait_for(
        "the restore to be reading the point",
        lambda: Path(f"{go}.reached").exists() or restoring.poll() is not None,
    )
    assert restoring.poll() is None, finish(restoring, "the restore")
    go_prune.touch()
    code, out, err = finish(pruning, "the prune")  # type: ignore[arg-type]
    assert code == 0, out + err
    go.touch()
    code, out, err = finish(restoring, "the restore")
    assert code == 0, out + err
    listed = {p["id"]: p for p in deploy.cli("--json", "points", "list", "alice").json()}
    assert listed[reading]["tiers"] == ["hot"], "prune dropped the point a restore was reading"
    assert not listed[gone]["tiers"], "the point no one reads was kept"
    assert _live(deploy, "alice-old") == digests(volume_for(4, "alice"))
