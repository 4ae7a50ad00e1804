"""Containment (drsvc/containment.py) and the streaming archive check (drsvc/runtimes/archive.py).

Each attack is built for real on a temp directory: the host file it aims at must be untouched.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsvc import containment
from drsvc.containment import CHECKPOINT, ROOTFS_DIFF, Escape, MemberRules, Root, clean
from drsvc.errors import IntegrityError
from drsvc.runtimes.archive import ArchiveCheck, TarScanner, checked


@pytest.fixture(params=["openat2", "nofollow-walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every Root test runs with openat2 and with the per-component O_NOFOLLOW fallback."""
    monkeypatch.setattr(containment, "_openat2_works", None if request.param == "openat2" else False)
    return str(request.param)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """(root, a host file outside it that every attack aims at)."""
    root = tmp_path / "upper"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("desk\n")
    secret = tmp_path / "host" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:secret\n")
    return root, secret


# ---------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("name", "rel"),
    [("a/b", "a/b"), ("./a//b/", "a/b"), ("a/./b", "a/b"), (".", ""), ("", "")],
)
def test_clean_names(name: str, rel: str) -> None:
    assert clean(name) == rel


@pytest.mark.parametrize("name", ["../x", "a/../../x", "a/..", "/etc/shadow", "a\0b"])
def test_clean_refuses_names_that_leave_the_root(name: str) -> None:
    with pytest.raises(Escape) as e:
        clean(name)
    assert e.value.exit_code == 4


def test_clean_container_absolute_paths() -> None:
    assert clean("/etc/x", absolute=True) == "etc/x"
    with pytest.raises(Escape):
        clean("/../etc/x", absolute=True)


# ---------------------------------------------------------------------- a root directory
def test_open_reads_beneath_the_root(world: tuple[Path, Path], resolver: str) -> None:
    root, _ = world
    with Root(root) as r:
        fd = r.open("etc/hostname")
        with os.fdopen(fd, "rb") as f:
            assert f.read() == b"desk\n"


@pytest.mark.parametrize("link", ["../host", "/", "/etc"])
def test_a_symlinked_directory_is_never_followed(world: tuple[Path, Path], resolver: str, link: str) -> None:
    root, secret = world
    # the tenant swaps a directory of its layer for a symlink out of it
    (root / "d").symlink_to(secret.parent if link == "../host" else link)
    with Root(root) as r:
        with pytest.raises(OSError) as e:
            r.open("d/shadow")
        assert e.value.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR)
        with pytest.raises(OSError):
            r.remove("d/shadow")
        with pytest.raises(OSError):
            r.mknod("d/shadow", 0o600 | 0o020000, 0)
        with pytest.raises(OSError):
            r.makedirs("d/new")
    assert secret.read_text() == "root:secret\n"


def test_a_symlink_as_the_last_component_is_not_followed(world: tuple[Path, Path], resolver: str) -> None:
    root, secret = world
    (root / "shadow").symlink_to(secret)
    with Root(root) as r:
        with pytest.raises(OSError) as e:
            r.open("shadow")
        assert e.value.errno == errno.ELOOP
        assert r.readlink("shadow") == str(secret)
        assert r.remove("shadow") is True  # the link goes, its target stays
    assert secret.exists() and not (root / "shadow").is_symlink()


def test_remove_a_tree_holding_links_out(world: tuple[Path, Path], resolver: str) -> None:
    root, secret = world
    (root / "t" / "u").mkdir(parents=True)
    (root / "t" / "u" / "out").symlink_to(secret.parent)
    with Root(root) as r:
        assert r.remove("t") is True
        assert r.remove("t") is False
    assert secret.read_text() == "root:secret\n"


def test_makedirs_create_and_walk(world: tuple[Path, Path], resolver: str) -> None:
    root, secret = world
    (root / "l").symlink_to(secret.parent)
    with Root(root) as r:
        r.makedirs("a/b/c")
        fd = r.create("a/b/c/f")
        os.write(fd, b"x")
        os.close(fd)
        with pytest.raises(FileExistsError):
            r.create("a/b/c/f")
        walked = dict(r.walk())
    assert set(walked) == {"etc", "etc/hostname", "a", "a/b", "a/b/c", "a/b/c/f", "l"}  # not beneath l
    assert (root / "a/b/c/f").read_bytes() == b"x"


def test_names_are_cleaned_by_the_root_too(world: tuple[Path, Path], resolver: str) -> None:
    root, _ = world
    with Root(root) as r:
        for bad in ("../host/shadow", "/etc/hostname"):
            with pytest.raises(Escape):
                r.open(bad)


# ---------------------------------------------------------------------- tar members
def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


def test_rootfs_rules_accept_a_normal_diff() -> None:
    rules = MemberRules(ROOTFS_DIFF)
    for info in (
        _info("etc", tarfile.DIRTYPE),
        _info("etc/passwd"),
        _info("etc/alias", tarfile.LNKTYPE, "etc/passwd"),
        _info("etc/localtime", tarfile.SYMTYPE, "/usr/share/zoneinfo/UTC"),  # absolute: resolved in the container
        _info("etc/fifo", tarfile.FIFOTYPE),
        _info("etc/null", tarfile.CHRTYPE),
    ):
        rules.check(info)


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([_info("../../etc/shadow")], "'..'"),
        ([_info("/etc/shadow")], "absolute"),
        ([_info("d", tarfile.SYMTYPE, "/etc"), _info("d/shadow")], "beneath 'd', a symlink"),
        ([_info("d", tarfile.SYMTYPE, "../../.."), _info("d/x", tarfile.DIRTYPE)], "beneath 'd'"),
        ([_info("x", tarfile.LNKTYPE, "/etc/shadow")], "absolute"),
        ([_info("x", tarfile.LNKTYPE, "etc/shadow")], "not to an earlier regular file"),
        ([_info("x", tarfile.LNKTYPE, "../etc/shadow")], "'..'"),
        ([_info("a", tarfile.DIRTYPE), _info("a", tarfile.SYMTYPE, "/etc"), _info("a/b")], "symlink"),
    ],
)
def test_rootfs_rules_refuse_tricks(members: list[tarfile.TarInfo], why: str) -> None:
    rules = MemberRules(ROOTFS_DIFF)
    with pytest.raises(Escape, match=re.escape(why)):
        for info in members:
            rules.check(info)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_a_checkpoint_archive_holds_only_files_and_directories(kind: bytes) -> None:
    rules = MemberRules(CHECKPOINT)
    rules.check(_info("config.dump"))
    with pytest.raises(Escape, match="only files and directories"):
        rules.check(_info("checkpoint/pages-1.img", kind, "config.dump"))


# ---------------------------------------------------------------------- streams
def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


Members = list[tuple[tarfile.TarInfo, bytes | None]]


def archive(diff: Members, deleted: list[str], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    d = tarfile.TarInfo("checkpoint")
    d.type = tarfile.DIRTYPE
    return _tar(
        [
            (_info("config.dump"), b'{"id": "x"}'),
            (d, None),
            (_info("checkpoint/pages-1.img"), os.urandom(3000)),
            (_info("rootfs-diff.tar"), _tar(diff, fmt)),
            (_info("deleted.files"), json.dumps(deleted).encode()),
        ],
        fmt,
    )


GOOD_DIFF = [
    (_info("tmp", tarfile.DIRTYPE), None),
    (_info("tmp/" + "x" * 150), b"long name"),  # a pax path record
    (_info("tmp/l", tarfile.SYMTYPE, "/" + "y" * 150), None),  # a pax linkpath record
    (_info("tmp/data"), os.urandom(10_000)),
]


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("piece", [1, 7, 512, 513, 65536])
def test_a_good_archive_passes_unchanged_whatever_the_pieces(fmt: int, piece: int) -> None:
    data = archive(GOOD_DIFF, ["/etc/motd", "/tmp/gone"], fmt)
    out = b"".join(checked(_pieces(data, piece)))
    assert out == data


def test_the_check_sees_long_names_and_the_nested_diff() -> None:
    check = ArchiveCheck()
    check.feed(archive(GOOD_DIFF, ["/etc/motd"]))
    check.close()
    rules = check.nested["rootfs-diff.tar"][1]
    assert "tmp/" + "x" * 150 in rules.files and "tmp/l" in rules.links
    assert check.deleted == ["etc/motd"]


@pytest.mark.parametrize(
    ("diff", "deleted", "why"),
    [
        ([(_info("../../../etc/cron.d/evil"), b"* * * * * root sh")], [], "'..'"),
        ([(_info("d", tarfile.SYMTYPE, "/etc"), None), (_info("d/shadow"), b"x")], [], "symlink"),
        ([(_info("d", tarfile.SYMTYPE, "/etc"), None)], ["/d/shadow"], "deleted.files entry '/d/shadow' lies beneath"),
        (GOOD_DIFF, ["/../etc/shadow"], "'..'"),
        (GOOD_DIFF, ["/"], "the root itself"),
        ([(_info("x", tarfile.LNKTYPE, "etc/shadow"), None)], [], "hard link"),
    ],
)
def test_hostile_archives_are_refused(diff: list, deleted: list[str], why: str) -> None:
    data = archive(diff, deleted)
    with pytest.raises(Escape, match=re.escape(why)):
        b"".join(checked(_pieces(data, 4096)))


def test_outer_members_that_leave_the_archive_are_refused() -> None:
    data = _tar([(_info("config.dump"), b"{}"), (_info("../../etc/cron.d/x"), b"evil")])
    with pytest.raises(Escape, match=re.escape("'..'")):
        b"".join(checked([data]))
    link = _tar([(_info("checkpoint", tarfile.SYMTYPE, "/etc"), None)])
    with pytest.raises(Escape, match="only files and directories"):
        b"".join(checked([link]))


def test_the_last_piece_is_held_until_the_end_is_checked() -> None:
    data = archive([(_info("d", tarfile.SYMTYPE, "/etc"), None)], ["/d/x"])
    received: list[bytes] = []
    with pytest.raises(Escape):
        for piece in checked(_pieces(data, 512)):
            received.append(piece)
    assert len(b"".join(received)) < len(data)  # the consumer never had the whole archive


def test_truncated_archives_are_refused() -> None:
    data = archive(GOOD_DIFF, [])
    with pytest.raises(IntegrityError, match="truncated"):
        b"".join(checked([data[: len(data) // 2]]))


def test_scanner_applies_pax_sizes() -> None:
    seen: list[tuple[str, int]] = []
    scanner = TarScanner(lambda info, name: seen.append((name, info.size)))  # type: ignore[func-returns-value]
    info = _info("big")
    info.pax_headers = {"size": "5"}  # a size only the pax record carries (as for members over 8 GiB)
    raw = info.tobuf(tarfile.PAX_FORMAT) + b"12345" + b"\0" * 507 + _info("next").tobuf() + b"\0" * 1024
    scanner.feed(raw)
    scanner.close()
    assert seen == [("big", 5), ("next", 0)]
