"""A real catalog (every migration) with one policy, filled by the test: for health, status, metrics,
notifications. Times are relative to the fleet's ``now``: when it was made (the test's start)."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.policy import load_policies

POLICY = """\
name: gold
selector: {labels: {tier: gold}}
schedule: "0 * * * *"
objectives: {rpo: 2h, rto: 30s}
drill: {schedule: "0 3 * * *", sample: 1}
"""


class Fleet:
    """A real catalog (all migrations) and one policy file, filled by the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.now = clock.now().replace(microsecond=0)  # not at import: a long run starts minutes later
        (root / "policies").mkdir()
        (root / "policies" / "gold.yaml").write_text(POLICY)
        self.catalog = Catalog.open(root / "catalog.db")
        self.policies = load_policies([root / "policies"])
        self._n = 0

    def desktop(self, name: str, tier: str = "gold", first_seen: timedelta = timedelta(days=2)) -> None:
        self.catalog.upsert_desktop(
            {"id": name, "runtime_url": "podman://x", "container": name, "labels": {"tier": tier}}
        )
        self.catalog.execute(
            "UPDATE desktops SET first_seen = ? WHERE id = ?", [clock.to_iso(self.now - first_seen), name]
        )

    def point(self, desktop: str, ago: timedelta, status: str = "complete", reason: str | None = None) -> str:
        self._n += 1
        pid = f"{desktop}-{self._n:04d}"
        self.catalog.add_point(
            {
                "id": pid,
                "desktop_id": desktop,
                "policy": "gold",
                "taken_at": clock.to_iso(self.now - ago),
                "status": status,
                "consistency": "paired",
                "reason": reason,
                "freeze_ms": 120.0 + self._n,
            }
        )
        return pid

    def drill(self, ago: timedelta, results: list[tuple[str, float, bool]]) -> None:
        started = clock.to_iso(self.now - ago)
        cur = self.catalog.execute(
            "INSERT INTO drills (started_at, finished_at, policy, selection, status) VALUES (?, ?, 'gold', 's', ?)",
            [started, started, "passed" if all(ok for *_, ok in results) else "failed"],
        )
        for desktop, rto, ok in results:
            self.catalog.execute(
                "INSERT INTO drill_results (drill_id, desktop_id, rto_seconds, target_seconds, passed) "
                "VALUES (?, ?, ?, 30, ?)",
                [cur.lastrowid, desktop, rto, int(ok)],
            )

    def config(self) -> Path:
        path = self.root / "drsvc.toml"
        path.write_text(
            textwrap.dedent(
                f"""\
                policies_dir = "{self.root / "policies"}"
                [catalog]
                path = "{self.root / "catalog.db"}"
                [keys]
                file = "{self.root / "key"}"
                """
            )
        )
        (self.root / "key").write_text("00" * 32)
        return path
