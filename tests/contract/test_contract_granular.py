"""drsvc points ls | points diff | dump | mount | restore --object: single objects out of a point.

Every byte is compared with what the test itself wrote (``volume_for``), not with drsvc's digests.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from contractlib import assert_exit, contract
from deployment import Deployment, volume_for
from waits import finish, wait_for

from drsvc import clock


def _point(d: Deployment, desktop: str) -> str:
    return str(d.cli("--json", "points", "list", desktop).json()[0]["id"])


def _some_object(seed: int, desktop: str) -> tuple[str, bytes]:
    objects = volume_for(seed, desktop)
    name = max(objects, key=lambda n: len(objects[n][0]))
    return name, objects[name][0]


@contract("points", 0)
def test_points_ls_and_diff(deploy: Deployment) -> None:
    deploy.desktop("alice", seed=1)
    (a,) = deploy.backup_at(clock.now() - timedelta(hours=1), "alice")
    changed = volume_for(1, "alice")
    name, _ = _some_object(1, "alice")
    changed[name] = (b"edited", changed[name][1], changed[name][2])
    changed["home/alice/new.txt"] = (b"hello", {}, {})
    deploy.world.write_volume("desktops", "alice", changed)
    (b,) = deploy.backup_at(clock.now(), "alice")
    r = deploy.cli("--json", "points", "ls", a)
    assert_exit(r, 0)
    assert "meta/profile" in r.stdout and name in r.stdout
    r = deploy.cli("--json", "points", "diff", a, b)
    assert_exit(r, 0)
    assert "home/alice/new.txt" in r.stdout and name in r.stdout


@contract("points", 3)
def test_points_ls_of_an_unknown_point(fleet: Deployment) -> None:
    assert_exit(fleet.cli("points", "ls", "20010101T000000Z-nobody"), 3, "20010101T000000Z-nobody")


@contract("dump", 0)
def test_dump_writes_the_objects_bytes(fleet: Deployment) -> None:
    name, data = _some_object(1, "alice")
    point = _point(fleet, "alice")
    for source in ("snapshot", "hot"):
        code, out, err = fleet.cli_bytes("dump", point, name, "--from", source)
        assert code == 0, err
        assert out == data, f"dump --from {source} gave other bytes than the test wrote"


@contract("dump", 4)
def test_dump_of_rotted_data_exits_4(fleet: Deployment) -> None:
    name, _ = _some_object(1, "alice")
    fleet.world.tamper_snapshot("desktops", "alice", name, b"rot" * 10)
    code, _, err = fleet.cli_bytes("dump", _point(fleet, "alice"), name, "--from", "snapshot")
    assert code == 4, err
    assert err.count("drsvc: error:") == 1 and "Traceback" not in err


@contract("dump", 3)
def test_dump_of_an_unknown_object(fleet: Deployment) -> None:
    assert_exit(fleet.cli("dump", _point(fleet, "alice"), "no/such/object"), 3, "no/such/object")


@contract("restore", 0)
def test_restore_object_brings_one_object_back_and_keeps_the_current_one(fleet: Deployment) -> None:
    name, data = _some_object(1, "alice")
    current = fleet.world.read_volume("desktops", "alice")
    current[name] = (b"overwritten by mistake", current[name][1], current[name][2])
    fleet.world.write_volume("desktops", "alice", current)
    r = fleet.cli("restore", "alice", "--object", name)
    assert_exit(r, 0)
    now = fleet.world.read_volume("desktops", "alice")
    assert now[name][0] == data
    (kept,) = [n for n in now if n.startswith(f"{name}.drsvc-")]
    assert now[kept][0] == b"overwritten by mistake"


@contract("restore", 0)
def test_restore_object_to_a_directory(fleet: Deployment, tmp_path: Path) -> None:
    name, data = _some_object(1, "alice")
    r = fleet.cli("restore", "alice", "--object", name, "--to-dir", str(tmp_path / "out"))
    assert_exit(r, 0)
    (written,) = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name == Path(name).name]
    assert written.read_bytes() == data


def _spawn_mount(fleet: Deployment, tmp_path: Path) -> tuple[subprocess.Popen[str], Path, bytes]:
    """``drsvc mount`` of alice's point in a child; the object it should show, and its content."""
    if subprocess.run(["sh", "-c", "command -v fusermount3"], capture_output=True).returncode != 0:
        pytest.skip("fusermount3 (Debian: fuse3) is not installed: drsvc mount cannot run here")
    name, data = _some_object(1, "alice")
    where = tmp_path / "mnt"
    where.mkdir()
    return fleet.spawn("mount", _point(fleet, "alice"), str(where)), where / "volume" / name, data


def _wait_mounted(proc: subprocess.Popen[str], target: Path) -> None:
    wait_for("the point to be mounted", lambda: target.exists() or proc.poll() is not None)
    assert proc.poll() is None, proc.communicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_mount_unmounts_on_sigterm_and_sighup(fleet: Deployment, tmp_path: Path, sig: signal.Signals) -> None:
    """libfuse handles these only when their handler is the default: drsvc's own (a command's
    job interrupted, drsvc.cli.signals) must not stand in its way while it serves."""
    proc, target, _data = _spawn_mount(fleet, tmp_path)
    try:
        _wait_mounted(proc, target)
    finally:
        proc.send_signal(sig)
        code, out, err = finish(proc, f"drsvc mount after {sig.name}", timeout=20)
    assert code == 0, out + err
    assert not target.exists(), "still mounted after drsvc mount ended"


@contract("mount", 0)
def test_mount_shows_the_point_read_only_and_unmounts_on_ctrl_c(fleet: Deployment, tmp_path: Path) -> None:
    proc, target, data = _spawn_mount(fleet, tmp_path)
    try:
        _wait_mounted(proc, target)
        assert target.read_bytes() == data
        with pytest.raises(OSError):
            target.write_bytes(b"no")
    finally:
        proc.send_signal(signal.SIGINT)
        code, out, err = finish(proc, "drsvc mount after Ctrl-C")
    assert code == 0, out + err
    assert not target.exists(), "still mounted after drsvc mount ended"


@contract("mount", 1)
def test_mount_without_the_extra_says_so_before_it_says_mounting(
    fleet: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mfusepy", None)  # the 'mount' extra not installed
    r = fleet.cli("mount", "alice", str(tmp_path))
    assert_exit(r, 1, "pip install 'drsvc[mount]'")
    assert "mounting" not in r.stderr, r.output
