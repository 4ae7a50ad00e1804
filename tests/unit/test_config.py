"""Config lookup and validation: errors name the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from drsvc.config import load_config
from drsvc.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "drsvc.key").write_text("00" * 32)
    path = tmp_path / "drsvc.toml"
    path.write_text(text)
    return path


GOOD = """
[catalog]
path = "catalog.db"
[keys]
file = "drsvc.key"
[hot]
store = "rados://drsvc-hot"
[cold]
store = "s3://bucket/prefix"
[runtime]
url = "podman:///run/podman/podman.sock"
"""


def test_good_config_resolves_relative_paths(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.catalog.path == tmp_path / "catalog.db"
    assert config.policies_dir == tmp_path / "policies"
    assert config.hot is not None and config.hot.store == "rados://drsvc-hot"
    assert config.scheduler.workers == 2


@pytest.mark.parametrize(
    ("edit", "key", "why"),
    [
        (("[hot]", '[hot]\nstroe = "x"'), "hot.stroe", "unknown key"),
        (('store = "rados://drsvc-hot"', 'store = "ftp://x"'), "hot.store", "scheme"),
        (('url = "podman:///run/podman/podman.sock"', 'url = "podman://"'), "runtime.url", "names no"),
        (('file = "drsvc.key"', 'file = "missing.key"'), "keys.file", "does not exist"),
        (('[catalog]\npath = "catalog.db"', "[catalog]"), "catalog.path", "required"),
    ],
)
def test_invalid_config_names_the_key_path(tmp_path, edit, key, why):
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert any(f"{path}: {key}: " in d and why in d for d in e.value.details), e.value.details
    assert e.value.exit_code == 2


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    path = _write(tmp_path, "[catalog\npath = 1\n")
    with pytest.raises(ConfigError, match=r"drsvc.toml: .*line 1"):
        load_config(path)


def test_lookup_order_env_then_cwd(tmp_path, monkeypatch):
    _write(tmp_path, GOOD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRSVC_CONFIG", raising=False)
    assert load_config().path == Path("drsvc.toml")
    other = tmp_path / "elsewhere"
    other.mkdir()
    alt = _write(other, GOOD)
    monkeypatch.setenv("DRSVC_CONFIG", str(alt))
    assert load_config().path == alt


def test_no_config_anywhere_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRSVC_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"drsvc --config drsvc\.toml init"):
        load_config()


@pytest.mark.parametrize("given", [None, -1, 3])
def test_hot_zstd_level_reaches_the_hot_codec_and_not_the_cold_one(tmp_path, given):
    """Hot chunks at ``[hot] zstd_level`` (default 1, cheap: the cold tier compresses frames again),
    cold frames at ``[cold] zstd_level``: each store compresses at its own level."""
    import zstandard

    from drsvc.catalog import Catalog
    from drsvc.chunks.codec import CODEC_ZSTD
    from drsvc.services import Services

    text = f'[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n[hot]\nstore = "file://{tmp_path}/hot"\n'
    if given is not None:
        text += f"zstd_level = {given}\n"
    text += f'[cold]\nstore = "file://{tmp_path}/cold"\nzstd_level = 5\n'
    config = load_config(_write(tmp_path, text))
    (tmp_path / "drsvc.key").chmod(0o600)
    services = Services(config, Catalog.open(config.catalog.path))
    want = 1 if given is None else given
    assert (services.hot.level, services.cold.level) == (want, 5)
    data = b"".join(b"line %d of a log that compresses\n" % i for i in range(8000))
    payload = services.hot.codec.compress(data)
    assert payload[0] == CODEC_ZSTD and payload[1:] == zstandard.ZstdCompressor(level=want).compress(data)
    assert services.cold.codec.zstd()[0].compress(data) == zstandard.ZstdCompressor(level=5).compress(data)
