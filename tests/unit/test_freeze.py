"""FreezeBatch against the real hook script run as a subprocess (fake cgroup file, temp root)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from drsvc.errors import BackendError, InvalidInput
from drsvc.runtimes.base import DesktopRef
from drsvc.runtimes.freeze import FreezeBatch, checkpoint_batch, hook_installed, install_hook

HOOK = Path(__file__).resolve().parents[2] / "drsvc" / "data" / "criu" / "drsvc-freeze-hook"
CID = "a" * 40 + "0123456789abcdef01234567"
CID2 = "b" * 64


def cgroup_file(tmp_path: Path, cid: str, style: str = "podman-v1") -> Path:
    lines = {
        "podman-v1": f"9:name=systemd:/libpod_parent/libpod-{cid}\n8:pids:/libpod_parent/libpod-{cid}\n",
        "podman-v2": f"0::/machine.slice/libpod-{cid}.scope/container\n",
        "docker": f"12:memory:/docker/{cid}\n0::/system.slice/docker-{cid}.scope\n",
        "crio": f"0::/kubepods.slice/kubepods-burstable-pod1234.slice/crio-{cid}.scope\n",
    }[style]
    f = tmp_path / f"cgroup-{cid[:6]}-{style}"
    f.write_text(lines)
    return f


def hook(
    action: str, root: Path, cgroup: Path | None, *, wait: bool = True, init_pid: str | None = None
) -> subprocess.Popen[bytes] | subprocess.CompletedProcess[bytes]:
    env = {"PATH": "/usr/bin:/bin", "CRTOOLS_SCRIPT_ACTION": action, "DRSVC_FREEZE_ROOT": str(root)}
    if cgroup is not None:
        env["DRSVC_FREEZE_CGROUP_FILE"] = str(cgroup)
    if init_pid is not None:
        env["CRTOOLS_INIT_PID"] = init_pid
    if wait:
        return subprocess.run([str(HOOK)], env=env, capture_output=True, timeout=20)
    return subprocess.Popen([str(HOOK)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(action: str, root: Path, cgroup: Path | None) -> tuple[int, float]:
    t = time.monotonic()
    p = hook(action, root, cgroup)
    assert isinstance(p, subprocess.CompletedProcess)
    assert p.stdout == b"" and p.stderr == b""
    return p.returncode, time.monotonic() - t


def test_hook_is_executable_posix_sh() -> None:
    assert os.access(HOOK, os.X_OK)
    assert HOOK.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(HOOK)]).returncode == 0


@pytest.mark.parametrize("style", ["podman-v1", "podman-v2", "docker", "crio"])
def test_hook_finds_container_id_in_every_cgroup_layout(tmp_path: Path, style: str) -> None:
    with FreezeBatch([CID], root=tmp_path / "freeze") as fb:
        assert timed("pre-dump", fb.root, cgroup_file(tmp_path, CID, style))[0] == 0
        assert "pre-dump" in fb.timings(CID)


def test_hook_is_a_fast_no_op_without_rendezvous(tmp_path: Path) -> None:
    root = tmp_path / "freeze"
    cg = cgroup_file(tmp_path, CID)
    # no root dir, root without our dir, other container's dir, no cgroup file, garbage cgroup, no action
    # A hook that waited would never be released here and run into `hook`'s 20 s limit (a loud
    # failure): returning at all, with 0, is the proof; how fast is a benchmark's business.
    assert timed("post-dump", root, cg)[0] == 0
    with FreezeBatch([CID2], root=root):
        for action in ("pre-dump", "post-dump", "network-unlock", "pre-restore"):
            assert timed(action, root, cg)[0] == 0
        assert sorted(p.name for p in root.iterdir()) == [CID2]
        assert timed("post-dump", root, tmp_path / "missing")[0] == 0
        garbage = tmp_path / "garbage"
        garbage.write_text("0::/user.slice\n")
        assert timed("post-dump", root, garbage)[0] == 0
        assert timed("", root, cg)[0] == 0
    with FreezeBatch([CID], root=root) as fb:
        env = {"PATH": "/usr/bin:/bin", "CRTOOLS_SCRIPT_ACTION": "post-dump", "DRSVC_FREEZE_ROOT": str(root)}
        # no cgroup override and no CRTOOLS_INIT_PID: nothing to look at
        assert subprocess.run([str(HOOK)], env=env, timeout=5).returncode == 0
        assert fb.frozen() == set()


def test_post_dump_waits_until_release(tmp_path: Path) -> None:
    cg = cgroup_file(tmp_path, CID)
    with FreezeBatch([CID], root=tmp_path / "freeze", timeout=20) as fb:
        assert (fb.dir(CID) / "timeout").read_text().strip() == "20"
        for action in ("pre-dump", "network-lock"):
            assert timed(action, fb.root, cg)[0] == 0
        assert fb.frozen() == set()
        assert fb.init_pid(CID) is None
        p = hook("post-dump", fb.root, cg, wait=False, init_pid="4242")
        assert isinstance(p, subprocess.Popen)
        assert fb.wait_frozen(timeout=5) == {CID}
        assert fb.init_pid(CID) == 4242  # written before `frozen`: drsvc reads the tree's files
        time.sleep(0.3)
        assert p.poll() is None, "the hook must hold post-dump until release"
        fb.release()
        assert p.wait(20) == 0  # released: it returns (the hook's own timeout is 20 s)
        assert fb.frozen() == set()
        assert timed("network-unlock", fb.root, cg)[0] == 0
        window = fb.freeze_window(CID)
        assert window is not None and window >= 0.3  # it stood frozen at least while we slept
        assert set(fb.timings(CID)) == {"pre-dump", "network-lock", "post-dump", "network-unlock"}
    assert not fb.dir(CID).exists()
    assert fb.freeze_window(CID) == window  # kept after cleanup


def _children(pid: int) -> list[str]:
    """Command lines of the processes whose parent is ``pid``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (proc / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
    return found


def test_post_dump_blocks_on_the_hold_lock_instead_of_looking_in_steps(tmp_path: Path) -> None:
    """While drsvc holds ``hold.lock`` the hook waits in ONE ``flock`` on it (woken by the release),
    never in ``sleep`` steps; released, it returns and stamps no timeout."""
    cg = cgroup_file(tmp_path, CID)
    with FreezeBatch([CID], root=tmp_path / "freeze", timeout=20) as fb:
        assert (fb.dir(CID) / "hold.lock").exists()
        p = hook("post-dump", fb.root, cg, wait=False)
        assert isinstance(p, subprocess.Popen)
        assert fb.wait_frozen(timeout=5) == {CID}
        # Between `frozen` and its flock the hook runs `date` and `awk` (slow on a loaded machine):
        # sample until the flock shows, then go on looking for any other wait.
        seen: list[list[str]] = []
        deadline = time.monotonic() + 10
        while not any(cmd.startswith("flock -w") for cmd in (seen[-1] if seen else [])):
            assert time.monotonic() < deadline, f"no flock on hold.lock within 10 s: {seen[-5:]}"
            seen.append(_children(p.pid))
            time.sleep(0.01)
        waiting = []
        for _ in range(30):
            waiting.append(_children(p.pid))
            time.sleep(0.01)
        assert p.poll() is None, "the hook must hold post-dump until release"
        waits = {cmd for sample in waiting for cmd in sample}
        assert waits and all(cmd.startswith("flock -w") and "hold.lock" in cmd for cmd in waits), waits
        assert not any(cmd.startswith("sleep") for sample in seen for cmd in sample), seen
        fb.release()
        assert p.wait(5) == 0
        assert not {"timed-out", "owner-gone"} & set(fb.timings(CID))


def test_a_hook_blocked_on_the_hold_lock_lets_go_when_drsvc_dies(tmp_path: Path) -> None:
    """kill -9 of the process holding the batch: the kernel frees its locks and the hook returns
    (stamping ``owner-gone``) without any release."""
    root = tmp_path / "freeze"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from drsvc.runtimes.freeze import FreezeBatch\n"
            f"b = FreezeBatch([{CID!r}], root={str(root)!r}, timeout=20).__enter__()\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        p = hook("post-dump", root, cgroup_file(tmp_path, CID), wait=False)
        assert isinstance(p, subprocess.Popen)
        deadline = time.monotonic() + 5
        while not (root / CID / "frozen").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert p.poll() is None
        holder.kill()
        assert p.wait(10) == 0
        assert (root / CID / "owner-gone").exists() and not (root / CID / "release").exists()
    finally:
        holder.kill()
        holder.wait()


def test_post_dump_without_a_hold_lock_looks_for_the_release_as_before(tmp_path: Path) -> None:
    """A batch of an older drsvc has no ``hold.lock``: the hook looks for ``release`` every 1/20 s."""
    cg = cgroup_file(tmp_path, CID)
    with FreezeBatch([CID], root=tmp_path / "freeze", timeout=20) as fb:
        (fb.dir(CID) / "hold.lock").unlink(missing_ok=True)
        p = hook("post-dump", fb.root, cg, wait=False)
        assert isinstance(p, subprocess.Popen)
        assert fb.wait_frozen(timeout=5) == {CID}
        time.sleep(0.2)
        assert p.poll() is None
        fb.release()
        assert p.wait(5) == 0
        assert not {"timed-out", "owner-gone"} & set(fb.timings(CID))


def test_a_hold_lock_the_hook_cannot_wait_on_falls_back_to_looking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``flock`` that cannot wait on ``hold.lock`` (here: not a file; busybox's has no ``-w``)
    returns at once: the hook then looks for ``release`` every 1/20 s for the rest of its
    timeout, instead of letting the desktop go before the snapshot."""
    import socket

    cg = cgroup_file(tmp_path, CID)
    with FreezeBatch([CID], root=tmp_path / "freeze", timeout=20) as fb:
        (fb.dir(CID) / "hold.lock").unlink()
        sock = socket.socket(socket.AF_UNIX)
        monkeypatch.chdir(fb.dir(CID))  # a socket's path is short: bound relative to its dir
        sock.bind("hold.lock")  # exists, but open() refuses it
        try:
            p = hook("post-dump", fb.root, cg, wait=False)
            assert isinstance(p, subprocess.Popen)
            assert fb.wait_frozen(timeout=5) == {CID}
            time.sleep(0.3)
            assert p.poll() is None, "the hook must hold post-dump until release"
            fb.release()
            assert p.wait(5) == 0
            assert not {"timed-out", "owner-gone"} & set(fb.timings(CID))
        finally:
            sock.close()


def test_post_dump_writes_no_init_pid_it_cannot_trust(tmp_path: Path) -> None:
    cg = cgroup_file(tmp_path, CID)
    with FreezeBatch([CID], root=tmp_path / "freeze", timeout=20) as fb:
        p = hook("post-dump", fb.root, cg, wait=False, init_pid="12; rm -rf /")
        assert fb.wait_frozen(timeout=5) == {CID}
        assert fb.init_pid(CID) is None and not (fb.dir(CID) / "init-pid").exists()
        fb.release()
        assert isinstance(p, subprocess.Popen) and p.wait(5) == 0


def test_post_dump_gives_up_at_the_timeout(tmp_path: Path) -> None:
    cg = cgroup_file(tmp_path, CID)
    with FreezeBatch([CID], root=tmp_path / "freeze", timeout=0.4) as fb:
        timed("pre-dump", fb.root, cg)
        code, took = timed("post-dump", fb.root, cg)
        assert code == 0 and took > 0.3  # it waited for its 0.4 s timeout, then let go
        assert "timed-out" in fb.timings(CID)
        w = fb.freeze_window(CID)
        assert w is not None and w >= 0.3  # no network-unlock yet: measured up to release


def test_bad_timeout_file_means_default_but_release_still_works(tmp_path: Path) -> None:
    cg = cgroup_file(tmp_path, CID)
    with FreezeBatch([CID], root=tmp_path / "freeze") as fb:
        (fb.dir(CID) / "timeout").write_text("soon\n")
        p = hook("post-dump", fb.root, cg, wait=False)
        assert isinstance(p, subprocess.Popen)
        assert fb.wait_frozen(timeout=5) == {CID}
    assert p.wait(5) == 0  # leaving the batch released it


def test_exception_releases_and_cleans_up(tmp_path: Path) -> None:
    cg = cgroup_file(tmp_path, CID)
    p = None
    with pytest.raises(RuntimeError), FreezeBatch([CID, CID2], root=tmp_path / "freeze") as fb:
        p = hook("post-dump", fb.root, cg, wait=False)
        deadline = time.monotonic() + 5
        while CID not in fb.frozen() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fb.frozen() == {CID}
        raise RuntimeError("pool snapshot failed")
    assert isinstance(p, subprocess.Popen) and p.wait(5) == 0
    assert list(fb.root.iterdir()) == []


class HookedRuntime:
    """A runtime whose checkpoint runs the real hook as CRIU would (pre-dump, network-lock, then
    post-dump, which holds the desktop frozen) and notes, per container, whether the hook let go
    because drsvc released it or because its own timeout ran out."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.root = tmp_path / "freeze"
        self.let_go: dict[str, str] = {}

    @contextlib.contextmanager
    def checkpoint(self, name: str, *, tcp_established: bool = True) -> Iterator[BinaryIO]:
        cg = cgroup_file(self.tmp_path, name)
        for action in ("pre-dump", "network-lock", "post-dump"):
            hook(action, self.root, cg)
        timed_out = (self.root / name / "timed-out").exists()
        self.let_go[name] = "its own timeout" if timed_out else "release"
        yield io.BytesIO(b"archive of " + name.encode())


def test_a_failed_snapshot_still_releases_every_desktop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool snapshot fails while both desktops are frozen: drsvc releases them at once and
    reports the failure; neither is left standing until the hook gives up."""
    monkeypatch.setenv("DRSVC_FREEZE_ROOT", str(tmp_path / "freeze"))
    runtime = HookedRuntime(tmp_path)
    desktops = [DesktopRef(f"desk-{i}", cid, cid, None, None) for i, cid in enumerate((CID, CID2))]
    seen: list[set[str]] = []

    def snapshot(frozen: set[str]) -> None:
        seen.append(frozen)
        raise BackendError("pool snapshot failed")

    # The hook's own timeout is far longer than a release takes even on a loaded machine, so a
    # desktop let go by its timeout means drsvc did not release it.
    with pytest.raises(BackendError, match="pool snapshot failed"):
        checkpoint_batch(runtime, desktops, lambda _d, s: s.read(), while_frozen=snapshot, freeze_timeout=15)  # type: ignore[arg-type]
    assert seen == [{CID, CID2}], "the snapshot ran with both desktops frozen"
    assert runtime.let_go == {CID: "release", CID2: "release"}
    assert not (tmp_path / "freeze" / CID).exists()


def test_wait_frozen_returns_partial_set_at_deadline(tmp_path: Path) -> None:
    cg = cgroup_file(tmp_path, CID)
    with FreezeBatch([CID, CID2], root=tmp_path / "freeze") as fb:
        p = hook("post-dump", fb.root, cg, wait=False)
        t = time.monotonic()
        assert fb.wait_frozen(time.monotonic() + 1.0) == {CID}
        assert time.monotonic() - t >= 0.9  # it waited until the deadline for CID2
        fb.release()
        assert isinstance(p, subprocess.Popen) and p.wait(5) == 0
        assert fb.freeze_window(CID2) is None


def test_stale_rendezvous_dir_is_reset(tmp_path: Path) -> None:
    stale = tmp_path / "freeze" / CID
    stale.mkdir(parents=True)
    (stale / "release").touch()
    with FreezeBatch([CID], root=tmp_path / "freeze") as fb:
        assert not (fb.dir(CID) / "release").exists()


def test_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRSVC_FREEZE_ROOT", str(tmp_path / "envroot"))
    with FreezeBatch([CID]) as fb:
        assert fb.dir(CID).is_dir() and fb.root == tmp_path / "envroot"


@pytest.mark.parametrize("ids", [["desk-001"], ["abc123"], ["A" * 64]])
def test_rejects_anything_but_full_ids(ids: list[str]) -> None:
    with pytest.raises(InvalidInput, match="64-hex"):
        FreezeBatch(ids)


def test_rejects_non_positive_timeout() -> None:
    with pytest.raises(InvalidInput):
        FreezeBatch([CID], timeout=0)


def test_install_hook_is_idempotent_and_merges(tmp_path: Path) -> None:
    prefix, conf = tmp_path / "lib", tmp_path / "etc" / "runc.conf"
    assert not hook_installed(conf)
    conf.parent.mkdir()
    conf.write_text("tcp-established\naction-script /opt/other/hook")  # no trailing newline
    assert install_hook(prefix, conf) is True
    assert hook_installed(conf)
    text = conf.read_text()
    assert text.startswith("tcp-established\naction-script /opt/other/hook\n")
    assert f"action-script {prefix}/drsvc-freeze-hook\n" in text
    assert (prefix / "drsvc-freeze-hook").read_bytes() == HOOK.read_bytes()
    assert install_hook(prefix, conf) is False
    assert conf.read_text() == text
    (prefix / "drsvc-freeze-hook").chmod(0o644)
    assert not hook_installed(conf)
    assert install_hook(prefix, conf) is True and hook_installed(conf)


def test_hook_installed_needs_our_hook(tmp_path: Path) -> None:
    conf = tmp_path / "runc.conf"
    other = tmp_path / "other-hook"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    conf.write_text(f"# action-script {HOOK}\naction-script {other}\n")
    assert not hook_installed(conf)
    conf.write_text(f'--action-script "{HOOK}"\n')
    assert hook_installed(conf)


def test_shipped_runc_conf_names_the_default_hook_path() -> None:
    conf = HOOK.parent / "runc.conf"
    lines = [ln for ln in conf.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["action-script /usr/local/lib/drsvc/drsvc-freeze-hook"]
