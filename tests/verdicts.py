"""Verdicts a test can check without asserting how fast the machine is."""

from __future__ import annotations

from typing import Any


def assert_rto_verdict(code: int, doc: dict[str, Any]) -> None:
    """A restore's exit code and status agree with its RTO against the target: 0 and "ok" within
    it, 5 and "objective_missed" past it. How fast the lab restores is not asserted (a slow
    machine is not a failure; bench/ measures speed); a wrong verdict is."""
    assert doc["rto_seconds"] > 0, doc
    met = doc["rto_seconds"] <= doc["target_seconds"]
    assert (code, doc["status"]) == ((0, "ok") if met else (5, "objective_missed")), doc
