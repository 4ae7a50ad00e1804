"""Waiting in tests: every wait has a limit, and running out of it fails loudly, saying what for.

A wait that returns quietly when its time is up lets the assertion after it test something else
than intended (or nothing); these raise ``AssertionError`` naming what never happened.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout: float = 60.0, poll: float = 0.02) -> T:
    """Return ``probe()``'s first truthy value; ``AssertionError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def finish(proc: subprocess.Popen[str], what: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a child; kill it and fail naming ``what`` if it does not end."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{what} did not end within {timeout:g} s\n--- stdout\n{out}\n--- stderr\n{err}") from None
    return proc.returncode, out, err
