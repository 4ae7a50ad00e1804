"""The test tree itself: pytest imports test modules by basename (no packages), so two test files
with one name in different directories stop the whole run at collection ("import file
mismatch") -- while each directory alone still passes, which is how it went unnoticed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_names_are_unique_across_directories() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, count in names.items() if count > 1], {n: c for n, c in names.items() if c > 1}
