"""One writer per desktop: a backup and an in-place restore of the same desktop never overlap.

Restores do not take the work lease (a restore must not wait for a fleet's backup: RTO), so the
work lease alone let a backup freeze and snapshot a desktop whose volume an in-place restore was
rolling back (a point pairing the old memory with the restored disk, recorded "complete"), an
in-place restore roll back a desktop standing frozen in a backup's checkpoint, and two in-place
restores of one desktop interleave.

Each side records itself and looks for the other **in one catalog transaction** (``BEGIN
IMMEDIATE``: writers take turns): a backup its batch's ``pending`` points, an in-place restore its
``restore-in-place`` intent. Whichever comes second sees the first and steps aside with one line;
there is no moment where neither sees the other. Only live runs count (their owner lease,
``owner_alive``): a killed run's leftovers never block anyone (cleanup ends them).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from drsvc import clock
from drsvc.backup_commit import Outcome
from drsvc.catalog import Catalog
from drsvc.errors import Busy
from drsvc.intents import owner_alive, pending


def restores_in_place(catalog: Catalog, desktop_ids: Iterable[str], *, but: int | None = None) -> dict[str, str]:
    """Desktops of ``desktop_ids`` a live in-place restore is writing (other than intent ``but``):
    desktop -> what to tell the user."""
    wanted = set(desktop_ids)
    out: dict[str, str] = {}
    for intent in pending(catalog, "restore-in-place"):
        if intent.target in wanted and intent.id != but and owner_alive(catalog, intent.owner):
            out[intent.target] = (
                f"an in-place restore of {intent.target} is under way (restore {intent.detail.get('restore')}, "
                f"point {intent.detail.get('point')}); not backed up now, the next run backs it up"
            )
    return out


def backup_running(catalog: Catalog, desktop_id: str) -> str | None:
    """What to tell the user when a live backup is capturing ``desktop_id``, else None."""
    rows = catalog.query(
        "SELECT p.id, j.id AS job, j.owner FROM points p JOIN jobs j ON j.id = p.job_id "
        "WHERE p.desktop_id = ? AND p.status = 'pending' AND j.status = 'running' AND j.owner IS NOT NULL",
        [desktop_id],
    )
    for row in rows:
        if owner_alive(catalog, row["owner"]):
            return f"a backup of {desktop_id} is under way (job {row['job']}, point {row['id']})"
    return None


def refuse_restore_in_place(catalog: Catalog, desktop_id: str, intent_id: int) -> None:
    """Raise ``Busy`` when a live backup or another in-place restore has ``desktop_id``; call in the
    transaction that recorded the restore's intent ``intent_id``."""
    other = backup_running(catalog, desktop_id) or restores_in_place(catalog, [desktop_id], but=intent_id).get(
        desktop_id
    )
    if other is not None:
        raise Busy(f"{other.split(';')[0]}; restore {desktop_id} again once it has ended")


def record_refused(
    catalog: Catalog, refused: list[Outcome], why: dict[str, str], policy: str | None, job_id: int, at: datetime
) -> None:
    """Record the points of desktops a backup left out (``why``: ``restores_in_place``) as failed."""
    for o in refused:
        o.status, o.consistency, o.error = "failed", "crash", why[o.desktop]
        catalog.add_point(
            {
                "id": o.point_id,
                "desktop_id": o.desktop,
                "policy": policy,
                "taken_at": clock.to_iso(at),
                "status": "failed",
                "consistency": "crash",
                "reason": why[o.desktop],
                "job_id": job_id,
            }
        )
