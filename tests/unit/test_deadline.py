"""``drsvc.deadline``: one thread's deadline, checked where its work calls a backend."""

from __future__ import annotations

import threading

import pytest

from drsvc import deadline
from drsvc.deadline import Deadline, DeadlineExceeded


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_a_deadline_holds_on_its_own_thread_only(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(deadline, "time", clock)
    limit = Deadline.after(60, "the capture of desktop d1 (capture.deadline)")
    seen: list[BaseException | None] = []

    def other() -> None:
        try:
            deadline.check()  # another store thread: no deadline of its own here
        except BaseException as e:
            seen.append(e)
        else:
            seen.append(None)

    with deadline.within(limit):
        deadline.check()
        clock.now += 60
        with pytest.raises(DeadlineExceeded, match=r"d1 \(capture.deadline\) took longer than 1m: stopped there"):
            deadline.check()
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen == [None]
    deadline.check()  # the block is over: no deadline
    with pytest.raises(DeadlineExceeded), deadline.within(limit):
        pass  # entered after it passed (a retry): refused at once
    assert not DeadlineExceeded("x").retryable


def test_every_ceph_call_checks_the_deadline_before_it_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    from drsvc import ceph

    clock = _Clock()
    monkeypatch.setattr(deadline, "time", clock)
    sent = []
    with deadline.within(Deadline.after(1, "the capture of desktop d1 (capture.deadline)")):
        clock.now += 2
        with pytest.raises(DeadlineExceeded), ceph.ceph_errors("read rados://desktops/t1/x"):
            sent.append("read")
    assert sent == []
