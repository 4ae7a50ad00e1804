"""Library code never changes the process environment; the Ceph config travels with the adapters."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from drsvc.catalog import Catalog
from drsvc.config import parse_config
from drsvc.crypto import generate_key_file
from drsvc.services import Services


def test_services_pass_ceph_conf_to_rados_adapters_not_through_the_environment(tmp_path: Path) -> None:
    conf = tmp_path / "elsewhere.conf"
    conf.write_text("[global]\n")
    generate_key_file(tmp_path / "drsvc.key")
    (tmp_path / "policies").mkdir()
    text = (
        'policies_dir = "policies"\n[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n'
        f'[hot]\nstore = "rados://drsvc-hot"\nceph_conf = "{conf}"\n'
    )
    (tmp_path / "drsvc.toml").write_text(text)
    config = parse_config(tomllib.loads(text), tmp_path / "drsvc.toml")
    before = dict(os.environ)
    services = Services(config, Catalog.open(tmp_path / "catalog.db"))
    try:
        volume = services.volume("rados://desktops/alice")  # opening does not connect
        snapshots = services.snapshots("rados://desktops")
        assert dict(os.environ) == before
        assert volume._conn["conffile"] == str(conf)  # type: ignore[attr-defined]
        assert snapshots._conn["conffile"] == str(conf)  # type: ignore[attr-defined]
        clone_conn = volume.snapshots()._conn  # type: ignore[attr-defined]
        assert clone_conn["conffile"] == str(conf)
    finally:
        services.catalog.close()


def test_library_code_never_writes_the_process_environment() -> None:
    import re

    writes = re.compile(
        r"os\.environ\s*\[[^]]+\]\s*=|os\.environ\.(update|setdefault|pop|clear)\(|os\.(putenv|unsetenv)\("
    )
    src = Path(__file__).resolve().parents[2] / "drsvc"
    found = [
        f"{p.relative_to(src.parent)}:{n}: {line.strip()}"
        for p in sorted(src.rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if writes.search(line)
    ]
    assert not found, "pass settings to the adapter instead:\n" + "\n".join(found)
