"""The free-space guard before a checkpoint (drsvc.checkpoint_space) and the cgroup memory it reads."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from drsvc import checkpoint_space
from drsvc.runtimes import cgroupmem
from drsvc.runtimes.base import DesktopRef

GIB = 1 << 30
DESKTOP = DesktopRef("bob", "bob", "0" * 64, "rados://desktops/bob", "t")


class _Runtime:
    def __init__(self, told: tuple[int, str] | None) -> None:
        self.told = told

    def checkpoint_space(self, name: str) -> tuple[int, str] | None:
        return self.told


def _free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    st = SimpleNamespace(f_bavail=free // 4096, f_frsize=4096)
    monkeypatch.setattr(checkpoint_space.os, "statvfs", lambda _path: st)


def test_a_memory_image_larger_than_the_free_space_is_refused_naming_memory_free_space_and_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _free(monkeypatch, 10 * GIB)
    space = checkpoint_space.measure(_Runtime((4 * GIB, "/var/lib/containers/x/userdata")), DESKTOP)
    why = checkpoint_space.refusal(space, reserve=1 * GIB)  # needs 10 GiB + 1 GiB
    assert why is not None
    assert "4096 MiB" in why and "10240 MiB free" in why and "/var/lib/containers/x/userdata" in why


def test_an_image_that_fits_with_the_reserve_is_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _free(monkeypatch, 11 * GIB)
    space = checkpoint_space.measure(_Runtime((4 * GIB, "/x")), DESKTOP)
    assert checkpoint_space.refusal(space, reserve=1 * GIB) is None


def test_the_configured_directory_replaces_the_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(
        checkpoint_space.os, "statvfs", lambda p: seen.append(p) or SimpleNamespace(f_bavail=0, f_frsize=4096)
    )
    space = checkpoint_space.measure(_Runtime((GIB, "/runtime/says")), DESKTOP, "/operator/says")
    assert seen == ["/operator/says"] and space is not None and space.path == "/operator/says"


def test_the_guard_is_skipped_when_the_runtime_cannot_tell(tmp_path: Path) -> None:
    assert checkpoint_space.measure(object(), DESKTOP) is None  # a runtime without checkpoint_space
    assert checkpoint_space.measure(_Runtime(None), DESKTOP) is None
    assert checkpoint_space.measure(_Runtime((GIB, str(tmp_path / "missing"))), DESKTOP) is None
    assert checkpoint_space.refusal(None, reserve=GIB) is None


def _cgroups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cgroup: str, stats: dict[str, str]) -> None:
    monkeypatch.setattr(cgroupmem, "CGROUP_ROOT", tmp_path / "cg")
    monkeypatch.setattr(cgroupmem, "PROC", tmp_path / "proc")
    (tmp_path / "proc" / "42").mkdir(parents=True)
    (tmp_path / "proc" / "42" / "cgroup").write_text(cgroup)
    for rel, text in stats.items():
        os.makedirs(tmp_path / "cg" / rel, exist_ok=True)
        (tmp_path / "cg" / rel / "memory.stat").write_text(text)


def test_cgroup_v2_counts_anonymous_and_shared_memory_not_the_file_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cgroups(
        tmp_path,
        monkeypatch,
        "0::/machine.slice/libpod-abc.scope\n",
        {
            "machine.slice/libpod-abc.scope": "anon 1000\nfile 999999\nshmem 24\n",
        },
    )
    assert cgroupmem.dumped_memory(42) == 1024


def test_cgroup_v1_reads_the_memory_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cgroups(
        tmp_path,
        monkeypatch,
        "4:memory:/libpod_parent/libpod-abc\n0::/libpod_parent/libpod-abc\n",
        {
            "memory/libpod_parent/libpod-abc": "rss 1\ncache 999999\ntotal_rss 2000\ntotal_shmem 48\n",
        },
    )
    assert cgroupmem.dumped_memory(42) == 2048


def test_no_cgroup_or_pid_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cgroups(tmp_path, monkeypatch, "0::/gone\n", {})
    assert cgroupmem.dumped_memory(42) is None
    assert cgroupmem.dumped_memory(0) is None
    assert cgroupmem.dumped_memory(43) is None


def _desktop(name: str) -> DesktopRef:
    return DesktopRef(name, name, name[0] * 64, f"rados://desktops/{name}", "t")


def _disks(monkeypatch: pytest.MonkeyPatch, free: dict[str, int], dev: dict[str, int | str]) -> None:
    """statvfs and st_dev faked per checkpoint directory."""
    monkeypatch.setattr(
        checkpoint_space.os, "statvfs", lambda p: SimpleNamespace(f_bavail=free[p] // 4096, f_frsize=4096)
    )
    monkeypatch.setattr(checkpoint_space, "device_of", lambda p: dev[p])


def test_a_batch_that_fits_desktop_by_desktop_but_not_together_refuses_the_largest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 10 GiB free, 1 GiB kept: each image (2.5 x 2, 3, 1.5 GiB = 5, 7.5, 3.75 GiB) fits alone, not
    # all three; smallest first: carol (3.75) and alice (5) take 8.75 of the 9 GiB, bob's 7.5 cannot
    _disks(monkeypatch, {"/a": 10 * GIB, "/b": 10 * GIB}, {"/a": 7, "/b": 7})  # two dirs, one filesystem
    memory = {"alice": (2 * GIB, "/a"), "bob": (3 * GIB, "/b"), "carol": (3 * GIB // 2, "/a")}
    spaces = {n: checkpoint_space.measure(_Runtime(m), _desktop(n)) for n, m in memory.items()}
    refused = checkpoint_space.refusals(spaces, reserve=1 * GIB)
    assert set(refused) == {"bob"}
    assert all(checkpoint_space.refusal(s, reserve=1 * GIB) is None for s in spaces.values())  # each fits alone
    why = refused["bob"]
    assert "3072 MiB" in why and "10240 MiB free" in why and "/b" in why and "other checkpoints" in why


def test_desktops_on_different_filesystems_do_not_share_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    _disks(monkeypatch, {"/a": 10 * GIB, "/b": 10 * GIB, "/c": 10 * GIB}, {"/a": 1, "/b": 2, "/c": "/c"})
    memory = {"alice": (3 * GIB, "/a"), "bob": (3 * GIB, "/b"), "carol": (3 * GIB, "/c")}
    spaces = {n: checkpoint_space.measure(_Runtime(m), _desktop(n)) for n, m in memory.items()}
    assert checkpoint_space.refusals(spaces, reserve=1 * GIB) == {}


def test_a_desktop_too_large_alone_says_so_and_leaves_the_budget_to_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _disks(monkeypatch, {"/a": 10 * GIB}, {"/a": 1})
    # bob's 20 GiB cannot fit even alone; alice and carol (3.75 GiB each) both fit in the 9 GiB
    memory = {"alice": (3 * GIB // 2, "/a"), "bob": (8 * GIB, "/a"), "carol": (3 * GIB // 2, "/a")}
    spaces = {n: checkpoint_space.measure(_Runtime(m), _desktop(n)) for n, m in memory.items()}
    spaces["dave"] = None  # the runtime cannot tell: not counted, not refused
    refused = checkpoint_space.refusals(spaces, reserve=1 * GIB)
    assert set(refused) == {"bob"} and "other checkpoints" not in refused["bob"]
