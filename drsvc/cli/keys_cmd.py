"""drsvc keys list | rotate [--tenant T]: the data keys that protect each tenant's points."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from drsvc.cli._common import App, DrsvcGroup, pass_app


@click.group("keys", cls=DrsvcGroup)
def command() -> None:
    """Data keys: one per tenant, wrapped by the key file's key and stored in the stores."""


@command.command("list")
@pass_app
def list_(app: App) -> None:
    """List the data keys of the hot and cold stores: tenant, key id, created, current, where stored.

    The fleet key (the key file's own) seals the store configs, fleet-scope points and every point
    written before per-tenant keys; each tenant's current key seals its new points.
    """
    from drsvc.keyadmin import list_keys

    doc = list_keys(app.services)

    def render(out: Console) -> None:
        out.print(f"scope {doc['scope']}, data keys wrapped by the {doc['provider']} provider's key {doc['kek']}")
        for row in doc["keys"]:
            who = row["tenant"] if row["tenant"] is not None else "(fleet: the key file)"
            mark = "current" if row["current"] else "older"
            created = row["created_at"] or "-"
            out.print(f"{row['key_id']}  {who:<24} {mark:<8} {created:<25} {','.join(row['stores'])}")

    app.emit(doc, render)


@command.command("rotate")
@click.option("--tenant", help="Rotate this tenant's key only (default: every tenant with a key or a desktop).")
@click.option("--dry-run", is_flag=True, help="Show which keys would be replaced, write nothing.")
@pass_app
def rotate(app: App, tenant: str | None, dry_run: bool) -> None:
    """Give tenants a new data key: new points use it, older points stay readable with theirs.

    The new key is stored (wrapped) in the hot store; the cold store receives it with the first
    point tiered that uses it. Keys are never deleted: a point's key lives as long as the store.
    """
    from drsvc.keyadmin import rotate_keys

    doc: dict[str, Any] = rotate_keys(app.services, tenant, dry_run=dry_run)

    def render(out: Console) -> None:
        verb = "would rotate" if dry_run else "rotated"
        for r in doc["rotated"]:
            new = r["new_key_id"] or "(new key)"
            out.print(f"{verb} {r['tenant']}: {r['old_key_id'] or '(none yet)'} -> {new}")
        if not doc["rotated"]:
            out.print("no tenant has a key or a desktop yet: nothing to rotate")

    app.emit(doc, render)
