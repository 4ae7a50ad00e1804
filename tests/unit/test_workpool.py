"""drsvc.workpool.run_each: the worker loop of drill and storm (order, errors, Ctrl-C)."""

from __future__ import annotations

import threading
import time

import pytest

from drsvc.workpool import run_each


def test_results_come_back_in_item_order_whatever_finishes_first() -> None:
    def slow_first(n: int) -> int:
        time.sleep(0.05 if n == 0 else 0)
        return n * 10

    assert run_each(slow_first, range(5), workers=3, name="t") == [0, 10, 20, 30, 40]


def test_an_item_failing_lets_the_others_finish_then_raises() -> None:
    done: list[int] = []

    def fn(n: int) -> int:
        if n == 0:
            raise ValueError("item 0 broke")
        time.sleep(0.01)
        done.append(n)
        return n

    with pytest.raises(ValueError, match="item 0 broke"):
        run_each(fn, range(4), workers=2, name="t")
    assert sorted(done) == [1, 2, 3], "the other desktops' jobs are not abandoned"


def test_ctrl_c_cancels_what_has_not_started_and_waits_for_what_runs() -> None:
    started: list[int] = []
    finished: list[int] = []
    second_running = threading.Event()
    events: list[str] = []

    def fn(n: int) -> int:
        started.append(n)
        if n == 0:
            assert second_running.wait(10), "item 1 never started"
            raise KeyboardInterrupt  # what the calling thread sees on Ctrl-C
        second_running.set()
        time.sleep(0.2)  # a teardown still running when Ctrl-C comes
        finished.append(n)
        events.append(f"item {n} finished")
        return n

    with pytest.raises(KeyboardInterrupt):
        run_each(fn, range(8), workers=2, name="t", on_interrupt=lambda: events.append("interrupted"))
    # the thread item 0 freed may take item 2 before the cancel lands; nothing after it starts
    assert set(started) <= {0, 1, 2}, f"items not started must never start: {started}"
    assert sorted(finished) == sorted(set(started) - {0}), "every running item finished before run_each returned"
    assert events[0] == "interrupted", "the report says interrupted while the rest finish"
