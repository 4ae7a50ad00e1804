"""How each chunk store cuts, as the catalog last saw it; and the one line that says a setting disagrees.

``[hot] chunk_kib`` shapes a *new* store only: an existing store's sealed config is the truth (every
writer cuts alike, or dedup is lost) and a store is never re-chunked. A process that opens an
existing hot store records its parameters here (``record``: one read, a write only when they
changed), so ``drsvc status`` says the disagreement once, where an operator looks, without
touching the store (``chunk_size_problem``). A run at a terminal says it on stderr too; a cron or
daemon run only logs it at info level (``drsvc.services``), or every cron minute would repeat it.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from drsvc import clock
from drsvc.errors import DrsvcError

if TYPE_CHECKING:
    from drsvc.catalog import Catalog
    from drsvc.chunks import ChunkerParams
    from drsvc.config import Config


def record(catalog: Catalog, url: str, params: ChunkerParams) -> None:
    """Remember how the store at ``url`` cuts (a damaged or read-only catalog is left as it is)."""
    sizes = (params.avg_size, params.min_size, params.max_size)
    try:
        rows = catalog.query("SELECT avg_size, min_size, max_size FROM store_params WHERE url = ?", [url])
        if rows and (rows[0]["avg_size"], rows[0]["min_size"], rows[0]["max_size"]) == sizes:
            return
        catalog.execute(
            "INSERT INTO store_params (url, avg_size, min_size, max_size, seen_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (url) DO UPDATE SET avg_size = excluded.avg_size, min_size = excluded.min_size, "
            "max_size = excluded.max_size, seen_at = excluded.seen_at",
            [url, *sizes, clock.to_iso(clock.now())],
        )
    except (sqlite3.Error, DrsvcError):
        return  # only status misses the line; the store itself is unaffected


def recorded_avg_size(catalog: Catalog, url: str) -> int | None:
    """The average chunk size the store at ``url`` was last seen cutting; None when never recorded."""
    try:
        rows = catalog.query("SELECT avg_size FROM store_params WHERE url = ?", [url])
    except sqlite3.Error:
        return None
    return int(rows[0]["avg_size"]) if rows else None


def chunk_size_problem(config: Config, store_avg_size: int | None) -> str | None:
    """The line saying ``[hot] chunk_kib`` (set in the file) differs from what the hot store cuts; None: agrees."""
    hot = config.hot
    if hot is None or store_avg_size is None or "chunk_kib" not in hot.model_fields_set:
        return None
    if store_avg_size == hot.chunk_kib * 1024:
        return None
    kib = store_avg_size // 1024
    return (
        f"{config.path}: hot.chunk_kib = {hot.chunk_kib}, but the hot store {hot.store} cuts {kib} KiB chunks "
        f"(its sealed config) and keeps them: a store is never re-chunked, the setting applies to a new store "
        f"only. Set chunk_kib = {kib} (or remove it) to match the store, or point [hot] store at a new store "
        f"to cut {hot.chunk_kib} KiB chunks."
    )
