"""The configuration a command starts from: wrong files give one line and exit 2, never a traceback.

A config found through ``$DRSVC_CONFIG`` or the search path is not checked by the option parser,
so what ``--config`` refuses (a directory, an unreadable file) must be refused by drsvc itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from contractlib import assert_exit, contract
from deployment import Deployment


@contract("status", 2)
def test_no_config_anywhere_says_how_to_write_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    monkeypatch.delenv("DRSVC_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("drsvc.config.SEARCH_PATH", (Path("drsvc.toml"), tmp_path / "etc" / "drsvc.toml"))
    r = run_cli("status")
    # the hint is a command that works as printed: --config is an option of drsvc, not of init
    assert_exit(r, 2, "no configuration found", "drsvc --config drsvc.toml init")


@contract("status", 2)
def test_drsvc_config_naming_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: Any) -> None:
    monkeypatch.setenv("DRSVC_CONFIG", str(tmp_path))
    assert_exit(run_cli("status"), 2, f"{tmp_path}: cannot read the config file", "Is a directory")


@contract("status", 2)
def test_config_that_is_not_text(deploy: Deployment) -> None:
    deploy.config_path.write_bytes(b"\x00\xb7\xfe binary \xff")
    assert_exit(deploy.cli("status"), 2, "drsvc.toml: not UTF-8 text")


@contract("points", 2)
def test_catalog_path_naming_a_directory(deploy: Deployment) -> None:
    (deploy.root / "catalog.db").unlink(missing_ok=True)
    (deploy.root / "catalog.db").mkdir()
    r = deploy.cli("points", "list")
    assert_exit(r, 2, "invalid configuration")
    assert "drsvc.toml: catalog.path:" in r.stderr and "is a directory" in r.stderr, r.output


@contract("points", 1)
def test_catalog_on_a_read_only_file_system_says_where_it_must_be(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith("catalog.db"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr("drsvc.catalog.os.open", read_only)
    r = deploy.cli("points", "list")
    assert_exit(r, 1, "cannot open catalog", "Read-only file system", "[catalog] path", "/var/lib/drsvc")


@contract("status", 0)
def test_config_after_the_command_is_the_same_option(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    # operators type it where they type --json: after the command
    monkeypatch.delenv("DRSVC_CONFIG", raising=False)
    monkeypatch.setattr("drsvc.config.SEARCH_PATH", ())
    r = run_cli("status", "--config", str(deploy.config_path))
    assert r.code == 0, r.stderr
    r = run_cli("points", "list", f"--config={deploy.config_path}", "--json")
    assert r.code == 0 and r.json() == [], r.stderr
