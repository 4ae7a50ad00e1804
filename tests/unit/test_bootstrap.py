"""drsvc init's starter config: where it puts what the systemd units must write."""

from __future__ import annotations

from pathlib import Path

from drsvc.bootstrap import render_config


def test_a_config_in_etc_drsvc_keeps_its_catalog_where_the_units_may_write() -> None:
    # README "Install": the units run under ProtectSystem=strict, writable only /var/lib/drsvc, /run/drsvc
    text = render_config(Path("/etc/drsvc/drsvc.toml"), Path("/etc/drsvc/policies"), {})
    assert 'path = "/var/lib/drsvc/catalog.db"' in text


def test_a_config_elsewhere_keeps_its_catalog_beside_it(tmp_path: Path) -> None:
    text = render_config(tmp_path / "drsvc.toml", tmp_path / "policies", {})
    assert 'path = "catalog.db"' in text
