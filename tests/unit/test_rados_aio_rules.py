"""The librados aio lifetime rule (drsvc/ceph.py): every completion is waited with its callback.

python3-rados (pacific) gives librados a borrowed pointer to a completion with a callback;
``wait_for_complete()`` returns before the callback ran, and a completion dropped then can be
collected under librados' finisher thread: a segfault, not an exception. The integration test
``test_settle_survives_a_garbage_collection_right_after`` shows the crash path on the real lab;
this one keeps the rule everywhere code talks to librados, including the lab's own tools.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BARE_WAIT = re.compile(r"\.wait_for_(?:complete|safe)\(\)")


def test_no_completion_is_waited_without_its_callback() -> None:
    sources = [p for d in ("drsvc", "dev", "bench", "tests") for p in (REPO / d).rglob("*.py")]
    sources.append(REPO / "dev" / "lab")
    offenders = []
    for path in sources:
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if BARE_WAIT.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert len(sources) > 50, "the scan found almost no sources: wrong root?"
    assert not offenders, "use drsvc.ceph.wait(c) / c.wait_for_complete_and_cb():\n" + "\n".join(offenders)
