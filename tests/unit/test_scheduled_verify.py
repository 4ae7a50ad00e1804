"""Scheduled verification: policies' verify section, run by the scheduler, seen by status and metrics."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture, used through pytestmark)

from drsvc import clock
from drsvc.chunks import chunk_key
from drsvc.errors import EXIT_INTEGRITY, EXIT_OK
from drsvc.health import read_health
from drsvc.scheduler import Scheduler, due, load_states, run_due
from drsvc.verify import sample_points

pytestmark = pytest.mark.usefixtures("aws")
MiB = 1024 * 1024


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[ColdKit]:
    kit = ColdKit(tmp_path)
    kit.policy("std", ["alice", "bob"], verify={"schedule": "* * * * *", "sample": 3, "read_data": True})
    now = clock.now()
    kit.old = [kit.point("alice", now - timedelta(hours=h), os.urandom(MiB), policy="std") for h in (5, 4, 3)]
    kit.newest = [
        kit.point("alice", now - timedelta(hours=1), os.urandom(MiB), policy="std"),
        kit.point("bob", now - timedelta(hours=2), os.urandom(MiB), policy="std"),
    ]
    yield kit
    kit.catalog.close()


def verify_due(kit: ColdKit, now):
    items = [d for d in due(kit.services.policies, load_states(kit.services.catalog), now) if d.purpose == "verify"]
    assert [d.policy for d in items] == ["std"]
    return items


def test_the_sample_takes_each_desktops_newest_point_first(kit: ColdKit) -> None:
    policy = kit.services.policies.get("std")
    for seed in range(5):
        chosen = sample_points(kit.services.catalog, policy, random.Random(seed))
        assert len(chosen) == 3
        assert set(kit.newest) <= set(chosen)


def test_the_scheduler_verifies_and_a_damaged_point_is_reported_not_retried(kit: ColdKit) -> None:
    scheduler = Scheduler(kit.services)
    catalog = kit.services.catalog
    now = clock.now()
    [ok] = run_due(verify_due(kit, now), catalog, scheduler._verify)
    assert ok["exit_code"] == EXIT_OK and ok["read_data"] is True and ok["points_checked"] == 3
    (p,) = read_health(catalog, kit.services.policies).policies
    assert p.last_verify_ok is True
    # flip a bit in a chunk of bob's newest point (always in the sample)
    manifest = kit.services.hot.get_manifest("bob", kit.newest[1])
    victim = manifest["volume"]["stream"]["chunks"][0][0]
    path = kit.root / "hot" / chunk_key(victim)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1
    path.write_bytes(bytes(blob))
    later = now + timedelta(minutes=1)
    [bad] = run_due(verify_due(kit, later), catalog, scheduler._verify)
    assert bad["exit_code"] == EXIT_INTEGRITY and kit.newest[1] in bad["error"]
    state = load_states(catalog)[("std", "verify")]
    assert state.attempts == 0 and state.retry_at is None  # a finding, not a failure to retry
    health = read_health(catalog, kit.services.policies)
    assert health.policies[0].last_verify_ok is False
    assert any("last verification of std failed" in line for line in health.problems)
