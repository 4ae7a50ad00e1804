"""The root filesystem index taken while a checkpoint archive streams into the store."""

from __future__ import annotations

import io
import json
import random
import tarfile

import pytest

from drsvc.runtimes.tarindex import ArchiveIndexer


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def _archive(fmt: int = tarfile.PAX_FORMAT) -> tuple[bytes, dict[str, bytes]]:
    files = {
        "etc/hostname": b"desk-001\n",
        "home/user/" + "long-name-" * 20 + ".txt": b"x" * 3000,
        "tmp/empty": b"",
        "data/blob": random.Random(7).randbytes(70_000),
    }
    inner = _tar(
        [(_info("./etc", tarfile.DIRTYPE, mode=0o755), None)]
        + [(_info(name, mode=0o640, mtime=1_700_000_000, uid=1000), data) for name, data in files.items()]
        + [
            (_info("home/user/link", tarfile.SYMTYPE, linkname="../../etc/" + "z" * 120), None),
            (_info("home/user/hard", tarfile.LNKTYPE, linkname="etc/hostname"), None),
        ],
        fmt,
    )
    outer = _tar(
        [
            (_info("config.dump"), b"{}"),
            (_info("checkpoint/pages-1.img"), random.Random(1).randbytes(100_000)),
            (_info("rootfs-diff.tar"), inner),
            (_info("deleted.files"), json.dumps(["/var/log/old.log", "tmp/gone"]).encode()),
        ]
    )
    return outer, files


def _read_through(data: bytes, sizes: list[int]) -> tuple[bytes, ArchiveIndexer]:
    indexer = ArchiveIndexer(io.BytesIO(data))
    out = bytearray()
    i = 0
    while True:
        piece = indexer.read(sizes[i % len(sizes)])
        i += 1
        if not piece:
            break
        out += piece
    return bytes(out), indexer


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("sizes", [[1 << 20], [1, 7, 511, 513, 4096], [100_003]])
def test_members_offsets_and_deleted_files_whatever_the_read_sizes(fmt: int, sizes: list[int]) -> None:
    archive, files = _archive(fmt)
    passed, indexer = _read_through(archive, sizes)
    assert passed == archive  # the stream is untouched
    index = indexer.finish()
    by_path = {m.path: m for m in index.files}
    assert set(by_path) == {*files, "etc", "home/user/link", "home/user/hard"}
    for name, data in files.items():
        m = by_path[name]
        assert m.type == "file" and m.size == len(data) and m.mode == 0o640 and m.uid == 1000
        # the recorded offset points at the file's bytes in the outer stream as stored
        assert archive[m.offset : m.offset + m.size] == data
    assert by_path["etc"].type == "dir"
    assert by_path["home/user/link"].type == "symlink" and by_path["home/user/link"].link.endswith("z" * 120)
    assert by_path["home/user/hard"].type == "hardlink" and by_path["home/user/hard"].link == "etc/hostname"
    assert index.deleted == ["var/log/old.log", "tmp/gone"]
    doc = index.document()
    assert "notes" not in doc and "offset" not in next(f for f in doc["files"] if f["type"] == "dir")


def test_an_archive_without_a_diff_or_not_a_tar_is_noted_not_fatal() -> None:
    plain = _tar([(_info("config.dump"), b"{}")])
    passed, indexer = _read_through(plain, [1000])
    assert passed == plain
    assert indexer.finish().document()["notes"]
    garbage = b"\x01" * 5000
    passed, indexer = _read_through(garbage, [100])
    assert passed == garbage and indexer.finish().files == []
