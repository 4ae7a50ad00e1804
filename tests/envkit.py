"""DrsvcEnv: a drsvc deployment on the lab, shared by the integration fixtures and tests.

It lives here, not in tests/integration/conftest.py, because several conftest modules exist
(unit, contract, integration) and ``from conftest import`` picks whichever was imported first.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waits import wait_for

REPO = Path(__file__).resolve().parents[1]


@dataclass
class DrsvcEnv:
    """A drsvc config in a temp dir wired to the lab, with its own hot-store prefix and policies."""

    root: Path
    hot_url: str
    run_cli: Callable[..., Any]

    @property
    def config(self) -> Path:
        return self.root / "drsvc.toml"

    def write(self, extra: str = "") -> None:
        (self.root / "policies").mkdir(exist_ok=True)
        if not (self.root / "drsvc.key").exists():
            from drsvc.crypto import generate_key_file

            generate_key_file(self.root / "drsvc.key")
        self.config.write_text(
            f'[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n'
            f'[hot]\nstore = "{self.hot_url}"\nceph_conf = "{os.environ["CEPH_CONF"]}"\n'
            f'[runtime]\nurl = "podman://{os.environ["DRSVC_PODMAN_SOCKET"]}"\n'
            f"[scheduler]\nworkers = 2\nretries = 1\nlease_seconds = 60\ngc_grace_seconds = 0\n{extra}"
        )

    def policy(self, name: str, desktops: list[str], **fields: Any) -> Path:
        """Write policies/NAME.yaml selecting exactly ``desktops``; ``fields`` override defaults."""
        import yaml

        doc: dict[str, Any] = {
            "name": name,
            "selector": {"desktops": desktops},
            "schedule": "0 * * * *",
            "timezone": "UTC",
            "retention": {"hot": {"last": 24}},
        }
        doc.update(fields)
        path = self.root / "policies" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def cli(self, *args: str) -> Any:
        return self.run_cli("--config", str(self.config), *args)

    def wait_due_for_tier(self, *point_ids: str, timeout: float = 30.0) -> None:
        """Wait until ``tier`` would move every one of ``point_ids`` (their policy's ``after`` has
        passed): a condition, where a sleep of ``after`` plus a guess would race the clock."""

        def due() -> bool:
            r = self.cli("--json", "tier", "--dry-run")
            assert r.code == 0, r.output
            return set(point_ids) <= {m["point_id"] for m in r.json()["moves"]}

        wait_for(f"points {', '.join(point_ids)} due for the cold tier", due, timeout=timeout, poll=0.2)

    def subprocess(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        """``drsvc`` in its own process (for concurrency and kill -9 tests)."""
        return subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "drsvc"), "--config", str(self.config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )

    def services(self) -> Any:
        from drsvc.catalog import Catalog
        from drsvc.config import load_config
        from drsvc.services import Services

        config = load_config(self.config)
        return Services(config, Catalog.open(config.catalog.path))

    def cleanup(self) -> None:
        from drsvc.catalog import Catalog
        from drsvc.storage import open_store
        from drsvc.volumes import open_snapshots

        db = self.root / "catalog.db"
        if db.exists():
            catalog = Catalog.open(db)
            for row in catalog.query("SELECT pool, name FROM pool_snapshots WHERE removed_at IS NULL"):
                open_snapshots(row["pool"]).remove(row["name"])
            catalog.close()
        store = open_store(self.hot_url)
        store.delete_many(list(store.list("")))
