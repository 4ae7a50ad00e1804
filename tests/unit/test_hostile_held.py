"""Held files are read inside the freeze: a file type a desktop chose must not stall or touch the host.

A desktop's process may hold a FIFO open for reading (``O_NONBLOCK``: no writer needed) or a device
node it made with ``mknod`` and opened with ``O_PATH`` (no device permission needed). Its
``/proc/PID/fd`` link names the path, and drsvc opened that path beneath the upper dir with a plain
``O_RDONLY`` before looking at its type: the FIFO's open waited for a writer that never comes,
with every desktop of the batch frozen; a device's open would run the host driver's open (a
watchdog starts counting down, a tape rewinds). Only regular files are ever opened for reading now.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from drsvc.containment import Root
from drsvc.runtimes.heldfiles import HeldFiles, _copy_held

STALL = 30.0  # seconds: a deadlock check (the copy of two tiny files), not a speed bound


def test_a_fifo_held_for_reading_neither_stalls_the_copy_nor_is_taken(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "tmp").mkdir(parents=True)
    os.mkfifo(upper / "tmp" / "fifo")
    (upper / "tmp" / "ok").write_bytes(b"held data")
    held = HeldFiles()
    done = threading.Event()

    def copy() -> None:
        with Root(upper, what="upper dir") as layer:
            _copy_held(held, layer, {"tmp/fifo", "tmp/ok"}, 1 << 20)
        done.set()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    finished = done.wait(STALL)
    if not finished:  # be the writer the stalled open waits for, so the thread ends
        os.close(os.open(upper / "tmp" / "fifo", os.O_WRONLY | os.O_NONBLOCK))
        thread.join(STALL)
    try:
        assert finished, "the held-file copy stalled opening a FIFO"
        assert set(held.files) == {"tmp/ok"}
        assert held.files["tmp/ok"].copy.read_bytes() == b"held data"
    finally:
        if held.spool is not None:
            shutil.rmtree(held.spool)


def test_a_docker_file_swapped_for_a_fifo_after_its_type_was_read_neither_stalls_nor_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker's changed files are read while the container runs: its tenant can swap a regular
    file for a FIFO (or a device node) right after drsvc saw its type. drsvc opened the path a
    second time to read it: a FIFO's open waited for a writer for ever, a device's ran the host
    driver's open. The file is read through the descriptor whose type was checked."""
    from drsvc import containment
    from drsvc.runtimes.docker.pack import rootfs_diff

    upper = tmp_path / "upper"
    (upper / "tmp").mkdir(parents=True)
    (upper / "tmp" / "f").write_bytes(b"data")
    real_open = containment.Root.open

    def racing_open(self: containment.Root, rel: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
        fd = real_open(self, rel, flags, mode)
        if rel == "tmp/f" and flags & os.O_PATH and not (upper / "tmp" / "moved").exists():
            os.rename(upper / "tmp" / "f", upper / "tmp" / "moved")  # the tenant's swap, at the worst moment
            os.mkfifo(upper / "tmp" / "f")
        return fd

    monkeypatch.setattr(containment.Root, "open", racing_open)
    changes = [{"Path": "/tmp", "Kind": 0}, {"Path": "/tmp/f", "Kind": 1}]
    result: dict[str, Any] = {}

    def diff() -> None:
        spool, _ = rootfs_diff(
            {"Id": "c" * 64, "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": str(upper)}}}, changes, None
        )
        with tarfile.open(fileobj=spool, mode="r:") as tf:
            result.update({m.name: tf.extractfile(m).read() if m.isfile() else m.type for m in tf})  # type: ignore[union-attr]

    thread = threading.Thread(target=diff, daemon=True)
    thread.start()
    thread.join(STALL)
    if thread.is_alive():  # be the writer the stalled open waits for, so the thread ends
        os.close(os.open(upper / "tmp" / "f", os.O_WRONLY | os.O_NONBLOCK))
        thread.join(STALL)
        pytest.fail("reading a changed file stalled on a FIFO swapped in after its type was read")
    assert result["tmp/f"] == b"data"  # what was checked is what was read
