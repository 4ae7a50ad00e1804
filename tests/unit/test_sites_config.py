"""[sites.NAME] in the config, sites in policies, credentials sources, and a site that cannot be reached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drsvc.catalog import Catalog
from drsvc.config import load_config
from drsvc.errors import ConfigError, PolicyError
from drsvc.policy import load_policies
from drsvc.services import Services
from drsvc.sites import SiteUnreachable, credentials, relocate_volume, store_options

BASE = '[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n'


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "drsvc.key").write_text("00" * 32)
    path = tmp_path / "drsvc.toml"
    path.write_text(BASE + text)
    return path


def test_a_site_section_is_read_with_its_defaults(tmp_path: Path) -> None:
    config = load_config(
        _write(tmp_path, '[sites.dr]\nstore = "s3://dr-bucket/fleet"\nrestore_pool = "rados://dr-desktops"\n')
    )
    site = config.sites["dr"]
    assert site.storage_class == "STANDARD_IA" and not site.object_lock and site.credentials is None
    assert config.recovery.parallel == 4 and config.recovery.criu_per_host == 2


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        ('[sites.DR]\nstore = "s3://b"\n', "sites", "site name 'DR'"),
        ('[sites.dr]\nstore = "rados://pool"\n', "sites.dr.store", "scheme s3://"),
        ('[sites.dr]\nstore = "s3://b"\ncredentials = "secret:abc"\n', "sites.dr.credentials", "env:PREFIX"),
        ('[sites.dr]\nstore = "s3://b"\nrestore_pool = "rados://p/ns"\n', "sites.dr.restore_pool", "rados://POOL"),
        ('[sites.dr]\nstore = "s3://b"\nstorage_clas = "X"\n', "sites.dr.storage_clas", "unknown key"),
        ('[sites.dr]\nstore = "s3://b"\ncredentials = "file:nope.ini"\n', "sites.dr.credentials", "does not exist"),
        ("[recovery]\nparallel = 0\n", "recovery.parallel", "greater than or equal to 1"),
    ],
)
def test_site_config_errors_name_the_key(tmp_path: Path, text: str, key: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text))
    assert any(key in d and why in d for d in e.value.details), e.value.details


def test_credentials_come_from_where_the_site_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ini = tmp_path / "dr.ini"
    ini.write_text("[default]\naws_access_key_id = AKFILE\naws_secret_access_key = s3cr3t\n")
    config = load_config(
        _write(
            tmp_path,
            '[sites.a]\nstore = "s3://a-bucket"\ncredentials = "env:DRA"\n'
            '[sites.b]\nstore = "s3://b-bucket"\ncredentials = "file:dr.ini"\n'
            '[sites.c]\nstore = "s3://c-bucket"\ncredentials = "profile:dr"\n',
        )
    )
    monkeypatch.setenv("DRA_ACCESS_KEY_ID", "AKENV")
    monkeypatch.setenv("DRA_SECRET_ACCESS_KEY", "x")
    assert credentials("a", config.sites["a"]) == {"access_key": "AKENV", "secret_key": "x"}
    assert credentials("b", config.sites["b"]) == {"access_key": "AKFILE", "secret_key": "s3cr3t"}
    assert credentials("c", config.sites["c"]) == {"profile": "dr"}
    monkeypatch.delenv("DRA_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match=r"sites\.a\.credentials: DRA_ACCESS_KEY_ID and DRA_SECRET_ACCESS_KEY"):
        credentials("a", config.sites["a"])


def test_a_sites_endpoint_region_lock_and_deadlines_reach_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        _write(
            tmp_path,
            '[sites.dr]\nstore = "s3://dr-bucket/fleet"\nendpoint_url = "https://s3.dr.example"\n'
            'region = "eu-west-3"\ncredentials = "env:DRA"\nobject_lock = true\n'
            "[timeouts]\ns3_read_seconds = 7\n",
        )
    )
    monkeypatch.setenv("DRA_ACCESS_KEY_ID", "AKENV")
    monkeypatch.setenv("DRA_SECRET_ACCESS_KEY", "x")
    options = store_options("dr", config.sites["dr"], create=False, timeouts=config.timeouts)
    assert options["endpoint_url"] == "https://s3.dr.example" and options["region"] == "eu-west-3"
    assert options["object_lock"] is True and options["read_timeout"] == 7 and options["create"] is False
    assert options["access_key"] == "AKENV" and options["secret_key"] == "x"


def test_volumes_move_to_the_recovery_sites_pool_in_their_own_namespace() -> None:
    assert relocate_volume("rados://desktops/desk-001", "rados://dr-desktops") == "rados://dr-desktops/desk-001"
    assert relocate_volume("rados://desktops/desk-001", None) == "rados://desktops/desk-001"


def _policy(tmp_path: Path, **fields: Any) -> Path:
    doc = {"name": "p", "selector": {"tenant": "acme"}, "schedule": "@hourly", **fields}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_policies_name_sites_with_their_own_retention_and_a_priority(tmp_path: Path) -> None:
    path = _policy(
        tmp_path,
        priority=1,
        tiering={"after": "1h"},
        sites={"dr": {"after": "1d", "retention": {"daily": 30}, "object_lock_days": 30}},
    )
    policy = load_policies([path]).get("p")
    assert policy.priority == 1 and policy.sites["dr"].retention.daily == 30
    assert policy.sites["dr"].after.total_seconds() == 86400
    bad = _policy(tmp_path, priority=0, sites={"dr": {"retention": {"daily": 0}}})
    with pytest.raises(PolicyError) as e:
        load_policies([bad])
    assert any("priority: must be a positive integer" in d for d in e.value.details)
    assert any("sites.dr.retention" in d and "every rule is 0" in d for d in e.value.details)
    warned = load_policies([_policy(tmp_path, sites={"dr": {}})]).warnings
    assert any("no tiering section" in w for w in warned)


def test_an_unreachable_site_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    path = _write(tmp_path, '[sites.dr]\nstore = "s3://dr-bucket"\nendpoint_url = "http://127.0.0.1:9"\n')
    config = load_config(path)
    services = Services(config, Catalog.open(":memory:"))
    with pytest.raises(SiteUnreachable) as e:
        services.site_objects("dr")
    assert "site dr (s3://dr-bucket at http://127.0.0.1:9) cannot be used" in e.value.message
    assert "check [sites.dr] endpoint_url" in e.value.message and not e.value.traceback
