"""What a tier run did: one ``TierMove`` per point (also the row the catalog keeps of it), the
``TierReport`` of a run (exit code, lag per desktop and policy, the ``--json`` document), and the
per-point working state of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drsvc.crypto import Keys
from drsvc.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL
from drsvc.tiering.plan import Candidate


@dataclass
class TierMove:
    """One point's move to the cold tier."""

    point_id: str
    desktop: str
    policy: str
    taken_at: str
    status: str = "planned"  # planned | done | failed
    storage_class: str | None = None
    retain_until: str | None = None
    chunks: int = 0
    chunks_uploaded: int = 0
    bytes_uploaded: int = 0
    locks_extended: int = 0
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)
    error: str | None = None

    def document(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Point:
    """A point being tiered in a batch: its move, lock, and what it needs."""

    candidate: Candidate
    move: TierMove
    move_id: int
    until: datetime | None
    lock_days: int
    key: str = ""
    raw_manifest: bytes = b""
    image_key: str | None = None
    image_raw: bytes | None = None
    wanted: list[str] = field(default_factory=list)
    objects: dict[str, int] = field(default_factory=dict)  # volume chunk -> the object it lies within
    keys: Keys | None = None  # the data key of the point's manifest and chunks (the fleet key or a tenant's)


@dataclass
class _Read:
    """A point's manifest as read from the hot store, before the cold store's state is known."""

    key: str  # the manifest's key (the same in both stores)
    raw: bytes  # the sealed manifest as stored (copied verbatim)
    keys: Keys  # its data key
    streams: list[Any]  # its StreamRefs (``manifest_streams``)
    objects: dict[str, int]  # volume chunk -> the object it lies within
    image_id: str | None  # the base image record it names


@dataclass
class TierReport:
    dry_run: bool
    job_id: int | None = None
    moves: list[TierMove] = field(default_factory=list)
    note: str | None = None

    @property
    def exit_code(self) -> int:
        failed = sum(m.status == "failed" for m in self.moves)
        if not failed:
            return EXIT_OK
        return EXIT_PARTIAL if failed < len(self.moves) else EXIT_FAILED

    def lag(self) -> dict[tuple[str, str], int]:
        """Points this run found due for the cold tier and did not get there, per (desktop, policy)."""
        out: dict[tuple[str, str], int] = {}
        for m in self.moves:
            if m.status != "done":
                out[(m.desktop, m.policy)] = out.get((m.desktop, m.policy), 0) + 1
        return out

    def document(self) -> dict[str, Any]:
        done = [m for m in self.moves if m.status == "done"]
        return {
            "dry_run": self.dry_run,
            "job_id": self.job_id,
            "note": self.note,
            "moves": [m.document() for m in self.moves],
            "summary": {
                "count": len(self.moves),
                "done": len(done),
                "failed": sum(m.status == "failed" for m in self.moves),
                "chunks_uploaded": sum(m.chunks_uploaded for m in done),
                "bytes_uploaded": sum(m.bytes_uploaded for m in done),
            },
        }
