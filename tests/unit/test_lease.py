"""The work lease on a real catalog: one holder at a time, fencing tokens that only grow, a dead
holder on this host recognised at once, a live one elsewhere waited out, a lost lease refusing
to commit (``check``), and a joined lease fenced all the same."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from waits import wait_for

from drsvc.catalog import Catalog
from drsvc.errors import Busy
from drsvc.lease import JoinedLease, Lease, LeaseLost, holder_id


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog.open(tmp_path / "catalog.db")
    yield c
    c.close()


def holder(catalog: Catalog) -> str:
    return str(catalog.query("SELECT holder FROM leases WHERE name = 'work'")[0]["holder"])


def test_one_holder_at_a_time_and_tokens_grow(catalog: Catalog) -> None:
    with Lease(catalog) as first:
        assert first.token == 1 and holder(catalog) == holder_id()
        other = Lease(catalog)
        other.holder = "elsewhere.example:4242"  # another machine: cannot be checked, must wait
        with pytest.raises(Busy, match="another drsvc run holds the 'work' lease"), other:
            pass
        first.check()
    with Lease(catalog) as second:
        assert second.token == 2, "a released lease is taken with a larger token"


def test_an_expired_lease_is_taken_and_its_old_holder_cannot_commit(catalog: Catalog) -> None:
    old = Lease(catalog, ttl=60)
    old.__enter__()
    try:
        catalog.execute("UPDATE leases SET expires_at = 0 WHERE name = 'work'")  # paused past its TTL
        newer = Lease(catalog)
        newer.holder = "elsewhere.example:1"
        with newer:
            assert newer.token == old.token + 1  # type: ignore[operator]
            with pytest.raises(LeaseLost, match=f"token {old.token}"):
                old.check()
            newer.check()
    finally:
        old.__exit__(None, None, None)


def test_a_dead_holder_on_this_host_is_recognised_at_once(catalog: Catalog) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    assert catalog.acquire_lease("work", f"{holder_id().rsplit(':', 1)[0]}:{dead_pid}", 900) == 1
    with Lease(catalog) as lease:  # not waiting 900 s for it to expire
        assert lease.token == 2 and holder(catalog) == holder_id()


def test_a_live_holder_on_this_host_is_not_taken_over(catalog: Catalog) -> None:
    assert catalog.acquire_lease("work", f"{holder_id().rsplit(':', 1)[0]}:{os.getppid()}", 900) == 1
    with pytest.raises(Busy), Lease(catalog):
        pass


def test_the_lease_is_renewed_while_held(catalog: Catalog) -> None:
    with Lease(catalog, ttl=0.6) as lease:
        first = catalog.query("SELECT expires_at FROM leases")[0]["expires_at"]
        wait_for(
            "the lease to be renewed", lambda: catalog.query("SELECT expires_at FROM leases")[0]["expires_at"] > first
        )
        lease.check()


def test_a_renewal_that_finds_the_lease_taken_marks_it_lost(catalog: Catalog) -> None:
    with Lease(catalog, ttl=0.6) as lease:
        catalog.execute("UPDATE leases SET token = token + 1 WHERE name = 'work'")  # someone else's now
        wait_for("the renewal to notice", lease._lost.is_set)
        with pytest.raises(LeaseLost):
            lease.check()


def test_a_joined_lease_is_fenced_by_its_token(catalog: Catalog) -> None:
    with Lease(catalog) as scheduler:
        assert scheduler.token is not None
        with JoinedLease(catalog, scheduler.token) as agent:
            agent.check()
        with pytest.raises(LeaseLost), JoinedLease(catalog, scheduler.token + 7):
            pass
    # the scheduler released it: its agents can no longer commit
    with pytest.raises(LeaseLost):
        JoinedLease(catalog, scheduler.token).check()
