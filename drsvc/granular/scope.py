"""Who may browse and take what: the tenant scope of granular commands, and their audit record.

A command given ``--tenant T`` serves only desktops whose tenant is ``T``; any other desktop is
refused (exit 2) before a manifest is read, and the refusal is recorded like every other access
(``point_access``: who, which tenant scope, what, which desktop and point, when, outcome).
Without ``--tenant`` the operator acts for the whole fleet. Where a single-object restore may
write is the rule of ``drsvc.targets`` (the desktop's own namespace); this module only resolves
the request's desktop and point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.errors import DrsvcError, InvalidInput, NotFound
from drsvc.targets import operator


def actor() -> str:
    """Who runs this drsvc (the sudo caller first): the one definition in ``drsvc.targets``."""
    return operator()


@dataclass
class Scope:
    """One command's access: its tenant scope, its actor, and the audit rows it writes."""

    catalog: Catalog
    tenant: str | None
    action: str
    who: str = ""

    def __post_init__(self) -> None:
        self.who = self.who or actor()

    def record(
        self,
        outcome: str,
        *,
        desktop: str | None = None,
        point: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Write one audit row; returns its id (``update`` finishes a ``running`` one)."""
        cursor = self.catalog.execute(
            "INSERT INTO point_access (at, actor, tenant, action, desktop_id, point_id, detail, outcome) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                clock.to_iso(clock.now()),
                self.who,
                self.tenant,
                self.action,
                desktop,
                point,
                json.dumps(detail or {}, sort_keys=True, default=str),
                outcome,
            ],
        )
        return int(cursor.lastrowid or 0)

    def update(self, row: int, outcome: str, detail: dict[str, Any] | None = None) -> None:
        if detail is None:
            self.catalog.execute("UPDATE point_access SET outcome = ? WHERE id = ?", [outcome, row])
        else:
            self.catalog.execute(
                "UPDATE point_access SET outcome = ?, detail = ? WHERE id = ?",
                [outcome, json.dumps(detail, sort_keys=True, default=str), row],
            )

    def desktop(self, desktop_id: str, *, detail: dict[str, Any] | None = None) -> dict[str, Any]:
        """The desktop's catalog row, if this scope may see it; refusals are recorded, then raised."""
        try:
            row = self.catalog.desktop(desktop_id)
        except NotFound:
            self.record("refused", desktop=desktop_id, detail={**(detail or {}), "reason": "unknown desktop"})
            raise
        self._check(row, detail)
        return row

    def point(self, point_ref: str, *, detail: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(point row, desktop row) for a point id or unambiguous prefix, if this scope may see it."""
        try:
            point = self.catalog.point(point_ref)
        except NotFound:
            self.record("refused", point=point_ref, detail={**(detail or {}), "reason": "unknown point"})
            raise
        desktop = self.catalog.desktop(point["desktop_id"])
        self._check(desktop, detail, point=point["id"])
        return point, desktop

    def _check(self, desktop: dict[str, Any], detail: dict[str, Any] | None, point: str | None = None) -> None:
        if self.tenant is None or desktop.get("tenant") == self.tenant:
            return
        self.record(
            "refused",
            desktop=desktop["id"],
            point=point,
            detail={**(detail or {}), "reason": f"desktop of tenant {desktop.get('tenant')!r}"},
        )
        raise InvalidInput(
            f"desktop {desktop['id']} is not a desktop of tenant {self.tenant}; refused (recorded in the catalog)"
        )


def audited(scope: Scope, *, desktop: str | None, point: str | None, detail: dict[str, Any]) -> _Audit:
    """``with audited(...)``: one ``running`` row, finished ``ok`` or ``failed`` with the error."""
    return _Audit(scope, desktop, point, detail)


class _Audit:
    def __init__(self, scope: Scope, desktop: str | None, point: str | None, detail: dict[str, Any]) -> None:
        self.scope, self.desktop, self.point, self.detail = scope, desktop, point, detail
        self.row = 0

    def __enter__(self) -> _Audit:
        self.row = self.scope.record("running", desktop=self.desktop, point=self.point, detail=self.detail)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any) -> None:
        if kind is None:
            self.scope.update(self.row, "ok", self.detail)
        else:
            reason = str(error) if isinstance(error, DrsvcError) else (kind.__name__ + (f": {error}" if error else ""))
            self.scope.update(self.row, "failed", {**self.detail, "error": reason[:500]})
