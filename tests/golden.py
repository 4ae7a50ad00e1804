"""Golden files that cannot regenerate silently.

``UPDATE_GOLDEN=1`` rewrites a golden file *and fails the test*: a run with the variable set can
never pass (say, in CI), and the new file is only accepted by a person who reviews its diff and
runs the tests again without it. Every golden test also asserts its key facts independently, so
a golden file regenerated from a wrong output still meets an assertion that disagrees.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def check_golden(path: Path, actual: str) -> str:
    """Fail unless ``actual`` equals the golden file; with UPDATE_GOLDEN rewrite it, then fail."""
    if os.environ.get("UPDATE_GOLDEN"):
        old = path.read_text(encoding="utf-8") if path.exists() else None
        path.write_text(actual, encoding="utf-8")
        verdict = "unchanged" if old == actual else "REWRITTEN"
        pytest.fail(
            f"{path.name} {verdict} (UPDATE_GOLDEN is set): review `git diff {path}`, then run without UPDATE_GOLDEN",
            pytrace=False,
        )
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"output differs from {path} (UPDATE_GOLDEN=1 rewrites it for review)"
    return expected
