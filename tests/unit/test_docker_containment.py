"""The Docker adapter's own file system work, attacked: reading a live layer, writing a restored one.

Built on temp directories standing in for overlay upper dirs (the same code runs against the real
ones on the lab: tests/integration/test_hostile_archives.py). Every attack aims at a "host" file
outside the layer, which must come out untouched and never appear in an archive.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from drsvc.containment import Escape
from drsvc.runtimes.docker.pack import rootfs_diff
from drsvc.runtimes.docker.paths import RESTORE_MARKER, iter_leftovers, remove_restore_leftovers
from drsvc.runtimes.docker.unpack import Unpacker
from drsvc.runtimes.heldfiles import host_upper_dir, mount_of, parse_mountinfo


@pytest.fixture
def host(tmp_path: Path) -> Path:
    secret = tmp_path / "host" / "etc" / "shadow"
    secret.parent.mkdir(parents=True)
    secret.write_text("root:$6$secret\n")
    return secret


def container(upper: Path) -> dict[str, Any]:
    return {"Id": "c" * 64, "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": str(upper)}}}


def read_diff(spool: Any) -> dict[str, tuple[bytes, bytes | None, str]]:
    """name -> (type, data, linkname)"""
    out = {}
    with tarfile.open(fileobj=spool, mode="r:") as tf:
        for m in tf:
            data = tf.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            out[m.name] = (m.type, data, m.linkname)
    return out


def test_backup_reads_the_layer_as_it_is_links_as_links(tmp_path: Path, host: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "tmp" / "d").mkdir(parents=True)
    (upper / "tmp" / "d" / "f").write_bytes(b"data")
    os.link(upper / "tmp" / "d" / "f", upper / "tmp" / "hard")
    (upper / "tmp" / "l").symlink_to("/etc")
    os.mkfifo(upper / "tmp" / "fifo")
    os.mknod(upper / "tmp" / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # a whiteout
    changes = [
        {"Path": p, "Kind": k}
        for p, k in [
            ("/tmp", 0),
            ("/tmp/d", 1),
            ("/tmp/d/f", 1),
            ("/tmp/hard", 1),
            ("/tmp/l", 1),
            ("/tmp/fifo", 1),
            ("/tmp/gone", 2),
        ]
    ]
    spool, deleted = rootfs_diff(container(upper), changes, None)
    diff = read_diff(spool)
    assert diff["tmp/d/f"] == (tarfile.REGTYPE, b"data", "")
    assert diff["tmp/hard"][0] == tarfile.LNKTYPE and diff["tmp/hard"][2] == "tmp/d/f"
    assert diff["tmp/l"] == (tarfile.SYMTYPE, None, "/etc")
    assert diff["tmp/fifo"][0] == tarfile.FIFOTYPE
    assert "tmp/gone" not in diff and deleted == ["/tmp/gone"]


def test_a_directory_swapped_for_a_symlink_yields_no_host_file(tmp_path: Path, host: Path) -> None:
    """Docker listed /secrets/shadow; by the time drsvc reads it the tenant made /secrets a link to the host's /etc."""
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "secrets").symlink_to(host.parent)  # absolute: a host path when followed on the host
    (upper / "rel").symlink_to("../host/etc")  # relative: out of the layer
    changes = [
        {"Path": "/secrets", "Kind": 1},
        {"Path": "/secrets/shadow", "Kind": 1},
        {"Path": "/rel/shadow", "Kind": 0},
    ]
    spool, _ = rootfs_diff(container(upper), changes, None)
    diff = read_diff(spool)
    assert diff == {"secrets": (tarfile.SYMTYPE, None, str(host.parent))}  # the link, never what it points at
    spool.seek(0)
    assert b"$6$secret" not in spool.read()


def test_a_listed_path_leaving_the_layer_is_refused(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    with pytest.raises(Escape):
        rootfs_diff(container(upper), [{"Path": "/../host/etc/shadow", "Kind": 0}], None)


class _Client:
    def __init__(self, upper: Path, root: Path) -> None:
        self.upper, self.root_path = upper, root

    def inspect_raw(self, cid: str) -> dict[str, Any]:
        return container(self.upper)

    def root_dir(self) -> Path:
        return self.root_path


def unpacker(tmp_path: Path) -> tuple[Unpacker, Path]:
    upper = tmp_path / "upper"
    upper.mkdir()
    u = Unpacker(_Client(upper, tmp_path / "docker"), name=None, network=None, labels=None, what="restore x")  # type: ignore[arg-type]
    u.created = "c" * 64
    u.ckpt_dir = tmp_path / "ckpt"
    u.ckpt_dir.mkdir()
    return u, upper


def test_deletions_become_whiteouts_beneath_the_layer(tmp_path: Path) -> None:
    u, upper = unpacker(tmp_path)
    (upper / "etc").mkdir()
    (upper / "etc" / "motd").write_text("x")
    u._apply_deletions(u.created or "", ["/etc/motd", "/usr/share/doc"])
    for rel in ("etc/motd", "usr/share/doc"):
        st = os.lstat(upper / rel)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


@pytest.mark.parametrize("path", ["/../host/etc/shadow", "../../host/etc/shadow", "/l/shadow", "/"])
def test_deletions_never_leave_the_layer(tmp_path: Path, host: Path, path: str) -> None:
    u, upper = unpacker(tmp_path)
    (upper / "l").symlink_to(host.parent)  # what a rootfs diff extracted before deleted.files can plant
    with pytest.raises(Escape):
        u._apply_deletions(u.created or "", [path])
    assert host.read_text() == "root:$6$secret\n"
    assert not (host.parent / "shadow").is_char_device()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = ""
) -> tuple[tarfile.TarFile, tarfile.TarInfo]:
    buf = io.BytesIO()
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, len(data) if kind == tarfile.REGTYPE else 0, linkname, 0o600
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    buf.seek(0)
    tf = tarfile.open(fileobj=buf, mode="r:")  # noqa: SIM115 - the caller reads the member from it
    return tf, tf.getmembers()[0]


def test_checkpoint_images_go_beneath_the_checkpoint_directory(tmp_path: Path, host: Path) -> None:
    u, _ = unpacker(tmp_path)
    assert u._write_image_member(*_member("checkpoint/pages-1.img", data=b"pages")) == 1
    assert (tmp_path / "ckpt" / "pages-1.img").read_bytes() == b"pages"
    assert stat.S_IMODE(os.stat(tmp_path / "ckpt" / "pages-1.img").st_mode) == 0o600
    for name, kind, linkname in [
        ("checkpoint/../../host/etc/shadow", tarfile.REGTYPE, ""),
        ("checkpoint/x", tarfile.SYMTYPE, str(host)),
        ("checkpoint/y", tarfile.LNKTYPE, str(host)),
        ("checkpoint/z", tarfile.CHRTYPE, ""),
    ]:
        with pytest.raises(Escape):
            u._write_image_member(*_member(name, kind, linkname=linkname))
    (tmp_path / "ckpt" / "sub").symlink_to(host.parent)
    with pytest.raises(OSError):
        u._write_image_member(*_member("checkpoint/sub/shadow", data=b"evil"))
    assert host.read_text() == "root:$6$secret\n"


def test_containerds_copies_of_restored_checkpoints_are_removed(tmp_path: Path) -> None:
    def leftover(name: str, marker: str | None, age: float = 0.0) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "pages-1.img").write_bytes(b"memory")
        if marker is not None:
            (d / RESTORE_MARKER).write_text(marker + "\n")
        os.utime(d, (time.time() - age, time.time() - age))
        return d

    mine = leftover("ctrd-checkpoint111", "drsvc-aaa")
    running = leftover("ctrd-checkpoint222", "drsvc-bbb")  # another restore, still reading it
    stale = leftover("ctrd-checkpoint333", "drsvc-ccc", age=3600)  # an earlier restore's
    foreign = leftover("ctrd-checkpoint444", None, age=3600)  # not drsvc's: not ours to judge
    assert sorted(iter_leftovers(tmp_path)) == [mine, running, stale]
    assert remove_restore_leftovers("drsvc-aaa", temp_dirs=[tmp_path]) == 2
    assert not mine.exists() and not stale.exists() and running.exists() and foreign.exists()


# ---------------------------------------------------------------------- held files: whose upper dir
CONTAINER_VIEW = """\
83 55 0:41 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/etc,workdir=/w
"""
HOST_VIEW = """\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
201 22 0:40 / /s/aaa/merged rw - overlay overlay rw,lowerdir=/x,upperdir=/var/lib/c/aaa/diff,workdir=/w
202 22 0:41 / /s/bbb/merged rw - overlay overlay rw,lowerdir=/x,upperdir=/var/lib/c/bbb/diff,workdir=/w
"""


def test_the_upper_dir_comes_from_the_hosts_mount_table_not_the_containers() -> None:
    root = mount_of("/", parse_mountinfo(CONTAINER_VIEW))
    assert root is not None and root.options["upperdir"] == "/etc"  # what the tenant's namespace claims
    assert host_upper_dir(root, HOST_VIEW) == "/var/lib/c/bbb/diff"
    other = mount_of("/", parse_mountinfo(CONTAINER_VIEW.replace("0:41", "0:99")))
    assert other is not None and host_upper_dir(other, HOST_VIEW) is None  # a mount only the tenant sees
