"""Hostile store content on file:// (the shared cases: tests/hostile_store.py); the lab runs them
on RADOS and radosgw (tests/integration/test_hostile_store_lab.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_store import HostileStoreSuite, sparse_file

from drsvc.storage import ObjectStore
from drsvc.storage.file import FileStore


class TestHostileFileStore(HostileStoreSuite):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"file://{tmp_path / 'store'}"

    def big_object(self, store: ObjectStore, key: str, size: int) -> None:
        assert isinstance(store, FileStore)
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        sparse_file(path, size)
