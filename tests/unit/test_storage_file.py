"""file:// backend: the shared suite plus what is specific to files (atomic writes, URLs, registry)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from storage_suite import StorageSuite

from drsvc.errors import InvalidInput
from drsvc.storage import open_store, register_scheme, registered_schemes
from drsvc.storage.file import FileStore


class TestFileStore(StorageSuite):
    @pytest.fixture
    def store(self, tmp_path: Path):
        s = open_store(f"file://{tmp_path}/store")
        yield s
        s.close()


def test_fan_out_dirs_follow_the_key(tmp_path: Path) -> None:
    s = open_store(f"file://{tmp_path}")
    s.put("chunks/ab/abcdef", b"x")
    assert (tmp_path / "chunks" / "ab" / "abcdef").read_bytes() == b"x"


def test_no_temp_files_left_and_temp_files_not_listed(tmp_path: Path) -> None:
    s = open_store(f"file://{tmp_path}")
    s.put("d/k", b"x")
    assert os.listdir(tmp_path / "d") == ["k"]
    (tmp_path / "d" / ".k.tmp-123").write_bytes(b"half")  # a crashed writer's leftover
    assert list(s.list("d/")) == ["d/k"]


def test_failed_write_keeps_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = open_store(f"file://{tmp_path}")
    s.put("k", b"old")

    def boom(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(Exception, match="put k"):
        s.put("k", b"new")
    monkeypatch.undo()
    assert s.get("k") == b"old"
    assert sorted(os.listdir(tmp_path)) == ["k"]


def test_relative_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_store("file://rel/dir")
    assert isinstance(s, FileStore)
    assert s.url == f"file://{tmp_path}/rel/dir"


@pytest.mark.parametrize("url", ["file://", "nonsense", "ftp://host/x", "", "rados://", "rados://bad pool/x"])
def test_bad_urls_name_the_url(url: str) -> None:
    with pytest.raises(InvalidInput) as e:
        open_store(url)
    assert repr(url) in str(e.value)


def test_registry_takes_add_ons(tmp_path: Path) -> None:
    seen = {}

    def factory(url: str, **options: object) -> FileStore:
        seen["args"] = (url, options)
        return FileStore(tmp_path)

    register_scheme("memtest", factory)
    assert "memtest" in registered_schemes()
    assert {"file", "rados", "s3"} <= set(registered_schemes())
    store = open_store("memtest://x", fsync=False)
    assert isinstance(store, FileStore)
    assert seen["args"] == ("memtest://x", {"fsync": False})
