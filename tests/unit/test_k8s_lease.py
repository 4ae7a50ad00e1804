"""The work lease as a coordination.k8s.io Lease, through the real kubernetes client against the protocol fake."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.kubelet import FakeEnv, fake_env

from drsvc.errors import Busy
from drsvc.executors.kubernetes_lease import API_CALLS, KubernetesLease, microtime
from drsvc.lease import LeaseLost


@pytest.fixture
def env(tmp_path: Path) -> Iterator[FakeEnv]:
    with fake_env(tmp_path) as e:
        yield e


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def lease(env: FakeEnv, holder: str, clock: Clock | None = None, ttl: float = 60) -> KubernetesLease:
    lz = KubernetesLease(namespace="drsvc", ttl=ttl, configuration=env.kubelet.configuration(), clock=clock)
    lz.holder = holder
    return lz


def stored(env: FakeEnv) -> dict:
    return env.cluster.leases[("drsvc", "drsvc-work")]


def test_microtime_never_loses_its_fraction() -> None:
    # the client writes isoformat(): a zero fraction would vanish and the API server refuse the Lease
    assert microtime(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)).isoformat() == "2026-01-02T03:04:05.000001+00:00"
    assert microtime(dt.datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=dt.timezone(dt.timedelta(hours=2)))).isoformat() == (
        "2026-01-02T01:04:05.000007+00:00"
    )


def test_first_acquisition_creates_the_lease_and_release_frees_it(env: FakeEnv) -> None:
    clock = Clock()
    a = lease(env, "sched-a:1", clock)
    with a:
        assert a.token == 1
        spec = stored(env)["spec"]
        assert spec["holderIdentity"] == "sched-a:1" and spec["leaseTransitions"] == 1
        assert spec["leaseDurationSeconds"] == 60 and spec["renewTime"].endswith("Z")
        a.check()
        with pytest.raises(Busy, match="sched-a:1"):
            lease(env, "sched-b:1", clock).__enter__()
    assert stored(env)["spec"]["holderIdentity"] == ""
    b = lease(env, "sched-b:1", clock)
    with b:
        assert b.token == 2, "every acquisition raises the fencing token"
    assert set(env.cluster.calls) == set(API_CALLS["hold"])


def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced(env: FakeEnv) -> None:
    clock = Clock()
    a = lease(env, "sched-a:1", clock)
    a.__enter__()
    try:
        clock.now += dt.timedelta(seconds=61)
        b = lease(env, "sched-b:1", clock)
        with b:
            assert b.token == 2 and stored(env)["spec"]["holderIdentity"] == "sched-b:1"
            with pytest.raises(LeaseLost):
                a.check()
            assert not a._renew_once(1), "the old holder cannot renew over the new one"
            agent = KubernetesLease.join(1, namespace="drsvc", configuration=env.kubelet.configuration())
            agent._clock = clock
            with pytest.raises(LeaseLost):
                agent.__enter__()  # an agent of the old run refuses to start
            current = KubernetesLease.join(2, namespace="drsvc", configuration=env.kubelet.configuration())
            current._clock = clock
            with current:
                current.check()
    finally:
        a._stop.set()
        a.__exit__(None, None, None)  # releasing a lease we no longer hold changes nothing
    assert stored(env)["spec"]["leaseTransitions"] == 2


def test_renewal_extends_the_lease(env: FakeEnv) -> None:
    clock = Clock()
    a = lease(env, "sched-a:1", clock)
    with a:
        assert a.token is not None
        clock.now += dt.timedelta(seconds=40)
        assert a._renew_once(a.token)
        clock.now += dt.timedelta(seconds=40)  # 80 s after acquiring, 40 s after renewing
        a.check()
        with pytest.raises(Busy):
            lease(env, "sched-b:1", clock).__enter__()


def test_two_contenders_one_winner(env: FakeEnv) -> None:
    clock = Clock()
    with lease(env, "sched-0:1", clock):
        pass  # the Lease exists, released: both now race on the same resourceVersion
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def contend(holder: str) -> None:
        lz = lease(env, holder, clock)
        orig = lz._read

        def read_then_wait() -> object:
            obj = orig()
            barrier.wait(5)  # both have read the same version before either writes
            return obj

        lz._read = read_then_wait  # type: ignore[method-assign]
        try:
            lz.token = lz._acquire()
            outcomes[holder] = f"won {lz.token}"
        except Busy:
            outcomes[holder] = "busy"

    threads = [threading.Thread(target=contend, args=(h,)) for h in ("x:1", "y:1")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes.values()) == ["busy", "won 2"], outcomes


def test_a_dead_holder_on_this_host_is_taken_over_at_once(env: FakeEnv) -> None:
    import socket

    clock = Clock()
    a = lease(env, f"{socket.gethostname()}:999999999", clock)  # no such pid
    a.token = a._acquire()
    b = lease(env, "sched-b:1", clock)
    with b:
        assert b.token == 2


def test_forbidden_is_a_clear_error(env: FakeEnv) -> None:
    env.cluster.allowed = {("coordination.k8s.io", "leases", "get")}
    with pytest.raises(Exception, match="forbidden: grant it"):
        lease(env, "sched-a:1").__enter__()
