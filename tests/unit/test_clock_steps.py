"""The host's wall clock steps (NTP, an operator's ``date -s``) while leases are held.

Leases expire by wall-clock times in the catalog. A step forward by more than a lease's lifetime
made every live run look lapsed: another run took its work lease, cleanup deleted its owner row
and undid its intents (a live restore's clone), and the run itself could neither renew nor commit.
A step back made a dead run's lease look held for as long as the step. Now a holder on this host
that is alive (pid and process start time) is never lapsed, a lease held with its token is
renewed and valid whatever the clock says, and an expiry implausibly far ahead is bounded to one
lifetime from now. The clock is stepped by patching ``time.time`` only: the real one is never set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsvc import intents
from drsvc.catalog import Catalog
from drsvc.errors import Busy
from drsvc.intents import OWNER_TTL, Intents, Owner, leftovers, owner_alive
from drsvc.lease import Lease, holder_dead, holder_here, holder_id

HOUR = 3600.0


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog.open(tmp_path / "catalog.db")
    yield c
    c.close()


@pytest.fixture
def step(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """``step[0] = seconds``: the wall clock now reads that much ahead (negative: behind)."""
    offset = [0.0]
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + offset[0])
    yield offset


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen[bytes]]:
    """Another live process on this host (a second drsvc run, as far as leases can tell)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _holder_of(proc: subprocess.Popen[bytes]) -> str:
    host = holder_id().rsplit(":", 1)[0]
    start = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[19]
    return f"{host}:{proc.pid}@{start}"


def test_a_step_forward_does_not_hand_a_live_local_holders_work_lease_to_another_run(
    catalog: Catalog, step: list[float], other_process: subprocess.Popen[bytes]
) -> None:
    assert catalog.acquire_lease("work", _holder_of(other_process), 900) == 1
    step[0] = 2 * HOUR
    with pytest.raises(Busy, match="another drsvc run holds"), Lease(catalog):
        pass


def test_a_live_run_keeps_renewing_and_committing_after_a_step_forward(catalog: Catalog, step: list[float]) -> None:
    with Lease(catalog, ttl=60) as lease:
        assert lease.token is not None
        step[0] = 2 * HOUR
        assert catalog.renew_lease("work", lease.token, 60), "a held lease was not renewed after the step"
        lease.check()  # still valid: nobody else took it


def test_a_live_owner_is_alive_and_its_intents_are_not_leftovers_after_a_step_forward(
    catalog: Catalog, step: list[float]
) -> None:
    with Owner(catalog) as owner:
        Intents(catalog, owner.name).record("clone-volume", "rados://desktops/alice-copy")
        step[0] = 2 * HOUR
        assert owner_alive(catalog, owner.name)
        assert leftovers(catalog) == [], "cleanup would undo a live restore's clone"
        assert owner.token is not None and catalog.renew_lease(owner.name, owner.token, OWNER_TTL)


def test_a_reused_pid_is_not_the_holder(catalog: Catalog, other_process: subprocess.Popen[bytes]) -> None:
    host, _, rest = _holder_of(other_process).rpartition(":")
    pid, _, start = rest.partition("@")
    assert not holder_dead(f"{host}:{pid}@{start}")
    assert holder_dead(f"{host}:{pid}@{int(start) + 1}"), "a pid now running another process counts as alive"
    assert holder_here(f"{host}:{pid}") is None, "an older drsvc's holder (no start time): its expiry decides"


def test_a_step_back_bounds_a_dead_remote_holders_lease_to_one_lifetime(catalog: Catalog, step: list[float]) -> None:
    assert catalog.acquire_lease("work", "elsewhere.example:4242", 900) == 1
    step[0] = -5 * HOUR  # the row now says it expires 5 h from now
    with pytest.raises(Busy), Lease(catalog, ttl=900):
        pass
    step[0] = -5 * HOUR + 901  # one lifetime later, not five hours
    with Lease(catalog, ttl=900) as lease:
        assert lease.token == 2


def test_cleanup_bounds_a_dead_remote_owner_stepped_back(catalog: Catalog, step: list[float]) -> None:
    catalog.acquire_lease("owner:feedfacefeedface", "elsewhere.example:4242", OWNER_TTL)
    Intents(catalog, "owner:feedfacefeedface").record("clone-volume", "rados://desktops/x")
    step[0] = -5 * HOUR
    intents.bound_owner_leases(catalog)
    assert leftovers(catalog) == []
    step[0] = -5 * HOUR + OWNER_TTL + 1
    assert [i.owner for i in leftovers(catalog)] == ["owner:feedfacefeedface"]


def test_a_released_lease_is_free_even_while_its_holder_lives(catalog: Catalog) -> None:
    with Lease(catalog):
        pass
    assert catalog.acquire_lease("work", f"{holder_id().rsplit(':', 1)[0]}:{os.getppid()}", 60) is not None
