"""The CLI through its real entry point: init, help text, exit codes, points, catalog."""

from __future__ import annotations

from datetime import timedelta

import click
import pytest

from drsvc.catalog import Catalog
from drsvc.cli import commands
from drsvc.cli.main import cli


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean environment (no lab variables) in an empty directory."""
    for var in (
        "CEPH_CONF",
        "S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "CONTAINER_HOST",
        "DRSVC_PODMAN_SOCKET",
        "DOCKER_HOST",
        "DRSVC_CONFIG",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def configured(env, run_cli):
    result = run_cli("--config", str(env / "drsvc.toml"), "init")
    assert result.code == 0, result.output
    return env / "drsvc.toml"


def _walk(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _walk(command, (*prefix, name))


def test_every_command_has_help_text_and_lists_exit_codes(run_cli):
    for command in commands():
        cli.add_command(command)
    for path, command in _walk(cli):
        assert (command.help or "").strip(), f"drsvc {' '.join(path)} has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"drsvc {' '.join(path)} {param.opts[0]} has no help"
        result = run_cli(*path, "--help")
        assert result.code == 0
        assert "Exit codes:" in result.stdout
        assert "3  not found (desktop, recovery point)" in result.stdout


def test_init_writes_config_key_policies_and_catalog_and_is_idempotent(env, run_cli):
    config = env / "drsvc.toml"
    first = run_cli("--config", str(config), "--json", "init")
    assert first.code == 0, first.output
    doc = first.json()
    assert str(config) in doc["created"]
    assert (env / "drsvc.key").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (env / "policies").glob("*.yaml")) == [
        "executive.yaml",
        "lab.yaml",
        "standard.yaml",
    ]
    assert Catalog.open(env / "catalog.db", migrate=False).schema_version >= 2
    text = config.read_text()
    assert "# [hot]" in text  # nothing found: sections commented out, with the reason
    before = (config.read_text(), (env / "drsvc.key").read_text())

    second = run_cli("--config", str(config), "--json", "init")
    assert second.code == 0
    assert second.json()["created"] == []
    assert (config.read_text(), (env / "drsvc.key").read_text()) == before


def test_init_wires_what_it_finds(env, run_cli, monkeypatch):
    sock = env / "podman.sock"
    sock.write_text("")
    ceph = env / "ceph.conf"
    ceph.write_text("[global]\n")
    monkeypatch.setenv("CEPH_CONF", str(ceph))
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:7480")
    monkeypatch.setenv("DRSVC_PODMAN_SOCKET", str(sock))
    assert run_cli("--config", "drsvc.toml", "init").code == 0
    text = (env / "drsvc.toml").read_text()
    assert '\n[hot]\nstore = "rados://drsvc-hot"' in text
    assert f'ceph_conf = "{ceph}"' in text
    assert 'endpoint_url = "http://127.0.0.1:7480"' in text
    assert f'url = "podman://{sock}"' in text


def test_missing_config_is_invalid_input(env, run_cli):
    result = run_cli("points", "list")
    assert result.code == 2
    assert "drsvc --config drsvc.toml init" in result.stderr


def test_points_list_empty_and_unknown_desktop_exit_3(configured, run_cli):
    result = run_cli("--config", str(configured), "--json", "points", "list")
    assert result.code == 0 and result.json() == []
    result = run_cli("--config", str(configured), "points", "list", "ghost")
    assert result.code == 3
    assert "unknown desktop 'ghost'" in result.stderr
    assert run_cli("--config", str(configured), "--json", "points", "list", "ghost").json()["exit_code"] == 3


def test_points_list_json_contract(configured, run_cli):
    cat = Catalog.open(configured.parent / "catalog.db")
    cat.upsert_desktop({"id": "alice", "runtime_url": "podman:///s", "container": "alice", "labels": {}})
    cat.add_point(
        {
            "id": "p1",
            "desktop_id": "alice",
            "taken_at": "2026-11-27T10:00:00.000000Z",
            "status": "complete",
            "consistency": "paired",
            "bytes": 1234,
        }
    )
    cat.set_tier("p1", "hot", "rados://drsvc-hot")
    cat.close()
    result = run_cli("--config", str(configured), "--json", "points", "list", "alice")
    assert result.code == 0
    [point] = result.json()
    assert {k: point[k] for k in ("id", "desktop", "taken_at", "status", "consistency", "tiers", "bytes")} == {
        "id": "p1",
        "desktop": "alice",
        "taken_at": "2026-11-27T10:00:00.000000Z",
        "status": "complete",
        "consistency": "paired",
        "tiers": ["hot"],
        "bytes": 1234,
    }
    human = run_cli("--config", str(configured), "points", "show", "p1")
    assert human.code == 0 and "rados://drsvc-hot" in human.stdout


def test_catalog_check_ok_and_export(configured, run_cli):
    result = run_cli("--config", str(configured), "catalog", "check")
    assert result.code == 0 and "OK" in result.stdout
    export = run_cli("--config", str(configured), "catalog", "export")
    assert export.code == 0 and export.json()["points"] == []


def test_unknown_option_is_exit_2(run_cli):
    assert run_cli("points", "list", "--bogus").code == 2


def test_drill_dry_run_lists_what_it_would_restore_and_touches_nothing(configured, run_cli):
    cat = Catalog.open(configured.parent / "catalog.db")
    cat.upsert_desktop(
        {
            "id": "alice",
            "runtime_url": "podman:///s",
            "container": "alice",
            "tenant": "acme",
            "labels": {"tier": "standard"},
        }
    )
    for pid, when in (("old", "2026-11-26T10:00:00.000000Z"), ("new", "2026-11-27T10:00:00.000000Z")):
        cat.add_point(
            {"id": pid, "desktop_id": "alice", "taken_at": when, "status": "complete", "consistency": "paired"}
        )
        cat.set_tier(pid, "hot", "rados://drsvc-hot")
    cat.close()
    result = run_cli("--config", str(configured), "--json", "drill", "--policy", "standard", "--all", "--dry-run")
    assert result.code == 0, result.output
    assert result.json() == {"dry_run": True, "desktops": [{"desktop": "alice", "point_id": "new", "tiers": ["hot"]}]}
    assert Catalog.open(configured.parent / "catalog.db").query("SELECT * FROM drills") == []
    assert run_cli("--config", str(configured), "drill", "nobody", "--dry-run").code == 3


def test_points_list_text_is_one_whole_line_per_point(fleet, run_cli):
    """Greppable and streamed at any size: a header, then one unwrapped, untruncated line a point."""
    names = [f"tenant-{t}-engineering-workstation-{n:03d}" for t in "ab" for n in range(3)]
    pids = []
    for name in names:
        fleet.desktop(name)
        pids.append(fleet.point(name, timedelta(hours=1)))
    pids.append(fleet.point(names[0], timedelta(hours=2), status="failed", reason="x"))
    result = run_cli("--config", str(fleet.config()), "points", "list")
    assert result.code == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split()[:4] == ["ID", "DESKTOP", "TAKEN", "(UTC)"], header
    assert len(lines) == len(pids), result.stdout
    assert sorted(line.split()[0] for line in lines) == sorted(pids)
    assert all(line.split()[1] in names for line in lines), result.stdout
    status = header.index("STATUS")  # the columns line up under their heading
    assert sorted(line[status:].split()[0] for line in lines) == ["complete"] * len(names) + ["failed"]
