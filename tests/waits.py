"""Waiting in tests: every wait has a limit, and running out of it fails loudly, saying what for.

A wait that returns quietly when its time is up lets the assertion after it test something else
than intended (or nothing); these raise ``AssertionError`` naming what never happened.
"""

from __future__ import annotations

import subprocess
import threading
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


class Background:
    """``fn`` on a daemon thread: a fake that a test plays beside the code under test (a Job
    controller). An error in a thread is otherwise lost (the test then fails later, elsewhere, or
    not at all); ``join`` raises it in the test's thread, naming ``what``, and fails when the thread
    does not end in time."""

    def __init__(self, what: str, fn: Callable[[], object]) -> None:
        self.what = what
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True, name=what)
        self.thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as e:
            self.error = e

    def join(self, timeout: float = 30.0) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"{self.what} did not end within {timeout:g} s")
        if self.error is not None:
            raise AssertionError(f"{self.what}: {self.error}") from self.error
