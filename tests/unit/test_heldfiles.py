"""Held files: which open files CRIU checks, where they live, and how they go into an archive.

Reading a real frozen container's files is tested on the lab (tests/runtime_suite.py); here the
pure parts and the archive rewrite, on archives built like Podman's.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import BinaryIO, cast

from drsvc.runtimes.archive import TarWalker, rewrite_archive
from drsvc.runtimes.heldfiles import (
    HeldFile,
    HeldFiles,
    checked_by_criu,
    mount_of,
    parse_mountinfo,
    patch_archive,
)

MOUNTINFO = """\
83 55 0:41 / / rw,relatime - overlay overlay rw,lowerdir=/s/l/A:/s/l/B,upperdir=/s/ov/abc/diff,workdir=/s/ov/abc/work
84 83 0:44 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
85 83 0:45 / /dev rw,nosuid,noexec - tmpfs tmpfs rw,size=65536k,mode=755
90 83 254:0 /run/c/userdata/hosts /etc/hosts rw,relatime - ext4 /dev/vda rw,discard
93 83 254:0 /srv/x /home/my\\040docs rw,relatime - ext4 /dev/vda rw
"""


def test_mountinfo_names_the_root_overlay_and_its_upper_dir() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    root = mount_of("/", mounts)
    assert root is not None and root.mount_id == 83 and root.fstype == "overlay"
    assert root.options["upperdir"] == "/s/ov/abc/diff" and root.options["lowerdir"] == "/s/l/A:/s/l/B"
    assert mount_of("/tmp/held", mounts) == root
    assert mount_of("/etc/hosts", mounts).mount_id == 90  # type: ignore[union-attr]  # a bind-mounted file
    assert mount_of("/etc/hostsfile", mounts) == root  # a prefix of the name is not the mount
    assert mount_of("/dev/shm/x", mounts).mount_id == 85  # type: ignore[union-attr]
    assert mount_of("/home/my docs/a", mounts).mount_id == 93  # type: ignore[union-attr]  # \040 is a space


def test_criu_checks_every_open_file_but_write_only_appends() -> None:
    assert checked_by_criu(os.O_RDONLY)
    assert checked_by_criu(os.O_WRONLY)
    assert checked_by_criu(os.O_RDWR | os.O_APPEND)
    assert checked_by_criu(os.O_WRONLY | os.O_TRUNC | os.O_LARGEFILE)
    assert not checked_by_criu(os.O_WRONLY | os.O_APPEND)
    assert not checked_by_criu(os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)


# ---------------------------------------------------------------------- archives
def inner_tar(entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info in entries:
            body = data.get(info.name)
            if body is not None:
                info.size = len(body)
            tf.addfile(info, io.BytesIO(body) if body is not None else None)
    return out.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, 0o644 if kind == tarfile.REGTYPE else 0o755, 1_700_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def outer_tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o600
            tf.addfile(info, io.BytesIO(body))
    return out.getvalue()


def held_files(tmp_path: Path, files: dict[str, bytes]) -> HeldFiles:
    held = HeldFiles(spool=tmp_path / "spool")
    held.spool.mkdir()  # type: ignore[union-attr]
    for i, (path, body) in enumerate(files.items()):
        copy = tmp_path / "spool" / str(i)
        copy.write_bytes(body)
        held.files[path] = HeldFile(path, len(body), 0o100640, 1000, 1000, 1_700_000_123.5, copy)
    return held


class CountingReader(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self.src, self.max_read = io.BytesIO(data), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.max_read = max(self.max_read, len(buffer))
        data = self.src.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def members_of(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf.getmembers()}


def read_member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.extractfile(name).read()  # type: ignore[union-attr]


def test_patch_puts_the_files_as_they_stood_into_the_rootfs_diff(tmp_path: Path) -> None:
    xattr = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    diff = inner_tar(
        [
            entry("tmp", tarfile.DIRTYPE),
            entry("tmp/held", pax_headers=xattr, uname="desk"),
            entry("etc/motd"),
            entry("etc/link", tarfile.SYMTYPE, linkname="motd"),
        ],
        # what the runtime exported after CRIU let the desktop go: tmp/held had grown
        {"tmp/held": b"at the dump\nwritten after\n", "etc/motd": b"hello\n"},
    )
    pages = os.urandom(3 << 20)  # larger than one read: must stream
    src = outer_tar(
        {
            "config.dump": b'{"id": "x"}',
            "checkpoint/pages-1.img": pages,
            "rootfs-diff.tar": diff,
            "deleted.files": json.dumps(["/tmp/rotated", "/etc/issue"]).encode(),
        }
    )
    # tmp/rotated: held open at the dump, deleted by the desktop right after
    held = held_files(tmp_path, {"tmp/held": b"at the dump\n", "tmp/rotated": b"old log\n"})
    reader = CountingReader(src)
    out = b"".join(patch_archive(cast(BinaryIO, reader), held))
    assert reader.max_read <= 1 << 20

    outer = members_of(out)
    assert list(outer) == ["config.dump", "checkpoint/pages-1.img", "rootfs-diff.tar", "deleted.files"]
    assert read_member(out, "checkpoint/pages-1.img") == pages
    assert read_member(out, "config.dump") == b'{"id": "x"}'
    assert json.loads(read_member(out, "deleted.files")) == ["/etc/issue"]
    new_diff = read_member(out, "rootfs-diff.tar")
    inner = members_of(new_diff)
    assert set(inner) == {"tmp", "tmp/held", "etc/motd", "etc/link", "tmp/rotated"}
    assert read_member(new_diff, "tmp/held") == b"at the dump\n"
    h = inner["tmp/held"]
    assert (h.size, h.mode, h.uid, h.gid, h.uname) == (12, 0o640, 1000, 1000, "desk")
    assert h.mtime == 1_700_000_123.5
    assert h.pax_headers["SCHILY.xattr.security.capability"] == xattr["SCHILY.xattr.security.capability"]
    assert read_member(new_diff, "tmp/rotated") == b"old log\n"
    assert read_member(new_diff, "etc/motd") == b"hello\n"
    assert inner["etc/link"].issym() and inner["etc/link"].linkname == "motd"
    assert inner["tmp"].isdir()


def test_members_not_rewritten_pass_byte_for_byte(tmp_path: Path) -> None:
    long_name = "checkpoint/" + "n" * 150 + ".img"  # a GNU long-name header travels with its member
    src = outer_tar({"config.dump": b"{}", long_name: b"x" * 1000, "rootfs-diff.tar": inner_tar([], {})})
    out = b"".join(patch_archive(io.BytesIO(src), held_files(tmp_path, {"a": b"1"})))
    # everything before rootfs-diff.tar is the source's own bytes
    walker = TarWalker(io.BytesIO(src))
    prefix = b""
    for m in walker:
        if m.name == "rootfs-diff.tar":
            break
        prefix += m.raw + b"".join(walker.data())
    assert out.startswith(prefix) and len(prefix) > 2048
    assert read_member(read_member(out, "rootfs-diff.tar"), "a") == b"1"


def test_an_archive_without_rootfs_diff_gets_one_and_no_held_files_change_nothing(tmp_path: Path) -> None:
    src = outer_tar({"config.dump": b"{}", "checkpoint/core-1.img": b"core"})
    out = b"".join(patch_archive(io.BytesIO(src), held_files(tmp_path, {"tmp/held": b"kept"})))
    assert list(members_of(out)) == ["config.dump", "checkpoint/core-1.img", "rootfs-diff.tar"]
    assert read_member(read_member(out, "rootfs-diff.tar"), "tmp/held") == b"kept"
    assert b"".join(patch_archive(io.BytesIO(src), HeldFiles())) == src


def test_held_files_close_drops_the_copies(tmp_path: Path) -> None:
    held = held_files(tmp_path, {"a": b"1"})
    assert held.summary() == {"files": [{"path": "a", "size": 1}], "notes": []}
    held.close()
    held.close()
    assert not (tmp_path / "spool").exists()


def test_rewrite_archive_appends_before_a_new_end() -> None:
    src = outer_tar({"config.dump": b"{}"})
    out = b"".join(rewrite_archive(io.BytesIO(src), {}, append=[("pod.options", b'{"a": 1}')]))
    assert list(members_of(out)) == ["config.dump", "pod.options"]
    assert read_member(out, "pod.options") == b'{"a": 1}'
