"""A full disk (ENOSPC) and a read-only one (EROFS) where drsvc writes on the host.

Each test mounts a small tmpfs (root only: skipped, saying so, otherwise), fills it, and runs the
real command. It must fail with exactly one ``drsvc: error:`` line naming the path and what to do
("free space"; "read-only"), the contract's exit code (1), no traceback; the catalog stays sound,
earlier points intact; and once space is freed the same command succeeds and nothing is left.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from contractlib import assert_exit
from deployment import Deployment
from waits import finish, wait_for

from drsvc import faults


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (unmounted after the test)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root (this run is not root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(where: Path, leave: int = 0) -> Path:
    """Fill the file system of ``where`` up to ``leave`` bytes free; returns the filler file."""
    filler = where / ".filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    if leave:
        with open(filler, "r+b") as f:
            f.truncate(max(0, filler.stat().st_size - leave))
    return filler


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def _catalog_at(deploy: Deployment, where: Path) -> None:
    text = deploy.config_path.read_text().replace('path = "catalog.db"', f'path = "{where}/catalog.db"')
    deploy.config_path.write_text(text)


def _one_line(result: object, *fragments: str) -> None:
    assert_exit(result, 1, *fragments)


def test_a_full_disk_under_the_catalog_fails_in_one_line_and_the_next_run_succeeds(
    deploy: Deployment, small_fs: Path
) -> None:
    _catalog_at(deploy, small_fs)
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    filler = fill(small_fs)
    r = deploy.cli("backup", "alice")
    _one_line(r, str(small_fs), "free space")
    filler.unlink()
    assert_exit(deploy.cli("catalog", "check"), 0)
    assert_exit(deploy.cli("cleanup"), 0)
    assert_exit(deploy.cli("backup", "alice"), 0)
    statuses = sorted(p["status"] for p in deploy.cli("--json", "points", "list").json())
    assert statuses.count("complete") == 2, statuses
    assert_exit(deploy.cli("restore", "alice", "--force", "--verify"), 0)


def test_a_full_disk_under_the_hot_store_fails_in_one_line(deploy: Deployment, small_fs: Path) -> None:
    text = deploy.config_path.read_text().replace(
        f'store = "file://{deploy.root}/hot"', f'store = "file://{small_fs}/hot"'
    )
    deploy.config_path.write_text(text)
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    filler = fill(small_fs)
    r = deploy.cli("backup", "alice")
    assert r.code in (1, 6) and "Traceback" not in r.output, r.output
    assert "free space" in r.output and str(small_fs) in r.output, r.output
    filler.unlink()
    assert_exit(deploy.cli("cleanup"), 0)
    assert_exit(deploy.cli("backup", "alice"), 0)
    assert_exit(deploy.cli("restore", "alice", "--force", "--verify"), 0)


def test_restore_to_a_full_dir_fails_in_one_line(deploy: Deployment, small_fs: Path) -> None:
    objects = deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    fill(small_fs, leave=4096)  # the first write is short, only the next one fails
    name = max(objects, key=lambda n: len(objects[n][0]))
    r = deploy.cli("restore", "alice", "--object", name, "--to-dir", str(small_fs / "out"))
    _one_line(r, str(small_fs), "free space")


@pytest.mark.parametrize("leave", [0, 4096], ids=["full", "fills-part-way"])
@pytest.mark.parametrize("what", ["report", "metrics"])
def test_a_report_or_textfile_on_a_full_disk_fails_in_one_line(
    deploy: Deployment, small_fs: Path, what: str, leave: int
) -> None:
    """``leave``: one page free, so the first write is short (4096 bytes) and only the next fails."""
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    fill(small_fs, leave=leave)
    target = small_fs / ("report.html" if what == "report" else "drsvc.prom")
    if what == "report":
        r = deploy.cli("report", "--quarter", "2026Q4", "-o", str(target))
    else:
        r = deploy.cli("metrics", "--textfile", str(target))
    _one_line(r, str(small_fs), "free space")
    assert not target.exists(), "a truncated file was put in place"


def test_a_catalog_on_a_read_only_file_system_fails_in_one_line(deploy: Deployment, small_fs: Path) -> None:
    _catalog_at(deploy, small_fs)
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    remount(small_fs, "ro")
    try:
        r = deploy.cli("backup", "alice")
        _one_line(r, str(small_fs), "Read-only file system")
    finally:
        remount(small_fs, "rw")
    assert_exit(deploy.cli("catalog", "check"), 0)
    assert_exit(deploy.cli("backup", "alice"), 0)


# Not "remounted read-only mid-run": the kernel refuses `mount -o remount,ro` (EBUSY) while the
# catalog is open for writing; only the file system's own errors=remount-ro does that, which a
# test cannot trigger on tmpfs. SQLite then reports what the read-only test above classifies.
@pytest.mark.parametrize("fault", ["full"])
def test_the_catalogs_file_system_fails_mid_backup(
    deploy: Deployment, small_fs: Path, tmp_path: Path, fault: str
) -> None:
    """Filled while a backup stands frozen: the backup ends in one line, its desktops thawed;
    once space is freed the catalog is sound, cleanup ends what the backup left, and the next
    backup and a restore of the earlier point succeed."""
    _catalog_at(deploy, small_fs)
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    go = tmp_path / "go"
    proc = deploy.spawn("backup", "alice", **{faults.ENV: f"after-freeze:wait={go}"})
    wait_for("the backup to stand frozen", Path(f"{go}.reached").exists)
    filler = None
    if fault == "read-only":
        remount(small_fs, "ro")
    else:
        filler = fill(small_fs)
    try:
        go.touch()
        code, out, err = finish(proc, "the backup on a failing disk")
    finally:
        if fault == "read-only":
            remount(small_fs, "rw")
        elif filler is not None:
            filler.unlink()
    assert code == 1 and "Traceback" not in err, out + err
    lines = [ln for ln in err.splitlines() if ln.startswith("drsvc: error:")]
    assert len(lines) == 1 and str(small_fs) in lines[0], err
    assert ("Read-only file system" if fault == "read-only" else "free space") in lines[0], lines[0]
    assert_exit(deploy.cli("cleanup"), 0)  # the point left pending, its manifest without a row
    assert_exit(deploy.cli("catalog", "check"), 0)
    assert_exit(deploy.cli("backup", "alice"), 0)
    statuses = [p["status"] for p in deploy.cli("--json", "points", "list").json()]
    assert statuses.count("complete") == 2, statuses
    assert_exit(deploy.cli("restore", "alice", "--force", "--verify"), 0)


def test_dump_into_a_file_on_a_full_disk_fails_in_one_line(deploy: Deployment, small_fs: Path) -> None:
    import sys

    from deployment import CLI

    objects = deploy.desktop("alice")
    listed = deploy.cli("--json", "backup", "alice")
    assert listed.code == 0, listed.output
    point = listed.json()["results"][0]["point_id"]
    fill(small_fs, leave=4096)
    name = max(objects, key=lambda n: len(objects[n][0]))
    with open(small_fs / "out.bin", "wb") as out:
        done = subprocess.run(
            [sys.executable, str(CLI), "--config", str(deploy.config_path), "dump", point, name],
            stdout=out,
            stderr=subprocess.PIPE,
            env=deploy.env(),
            timeout=120,
        )
    err = done.stderr.decode()
    err += f"\n(out.bin: {(small_fs / 'out.bin').stat().st_size} bytes; free {os.statvfs(small_fs).f_bavail * 4096})"
    assert done.returncode == 1 and "Traceback" not in err and "Exception ignored" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("drsvc: error:")]
    assert len(lines) == 1 and "free space" in lines[0], err
