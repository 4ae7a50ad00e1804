"""One desktop per worker thread, in order, with Ctrl-C cancellation: the loop drill and storm share.

Each item is a whole desktop's job (a drill's restore and teardown, a fleet recovery's restore):
it owns what it creates, so an item already running is never abandoned half way. Ctrl-C (a
``KeyboardInterrupt`` in the calling thread) cancels the items not started yet, waits for the
running ones (their teardown included) and is raised again; the caller marks its report
interrupted. An exception from one item is raised once the others have finished.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_each(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    name: str,
    on_interrupt: Callable[[], None] = lambda: None,
) -> list[R]:
    """``fn(item)`` for every item on ``workers`` threads named ``name``; the results in item order.

    ``on_interrupt`` runs first on Ctrl-C, before the wait for the running items (so a report
    says "interrupted" while they finish).
    """
    pool = cf.ThreadPoolExecutor(workers, thread_name_prefix=name)
    try:
        futures = [pool.submit(fn, item) for item in items]
        return [future.result() for future in futures]
    except KeyboardInterrupt:
        on_interrupt()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
