"""Restore storms: admission slots per shared resource, priority order, the fleet's times, the record."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from drsvc.admission import Admission, Limits, RankedSlots, RestoreGate
from drsvc.catalog import Catalog
from drsvc.config import parse_config
from drsvc.errors import EXIT_FAILED, EXIT_OBJECTIVE_MISSED, EXIT_OK, EXIT_PARTIAL, DrsvcError, InvalidInput, NotFound
from drsvc.services import Services
from drsvc.storm import FleetItem, FleetReport, FleetRestore, plan_fleet, select_desktops, time_to_fraction


def test_one_desktop_holds_one_download_slot_for_its_overlapping_fetch_and_volume() -> None:
    admission = Admission(Limits(downloads=1, ceph_writes=1, criu_per_host=1))
    a = RestoreGate(admission, "h1")
    b = RestoreGate(admission, "h1")
    a("phase", phase="volume", state="start")
    a("phase", phase="fetch", state="start")  # the same desktop: no second slot, no wait
    entered = threading.Event()

    def other() -> None:
        b("phase", phase="fetch", state="start")  # another desktop waits for the slot
        entered.set()

    t = threading.Thread(target=other)
    t.start()
    assert not entered.wait(0.2)
    a("phase", phase="fetch", state="done")
    assert not entered.wait(0.2)  # a's volume still downloads
    a("phase", phase="volume", state="done")
    assert entered.wait(2)
    t.join()
    assert admission.waited["download"] >= 0.3


def test_criu_slots_are_per_host_and_release_all_frees_what_an_error_left() -> None:
    admission = Admission(Limits(downloads=4, ceph_writes=4, criu_per_host=1))
    a, b, c = RestoreGate(admission, "h1"), RestoreGate(admission, "h2"), RestoreGate(admission, "h1")
    a("phase", phase="container", state="start")
    b("phase", phase="container", state="start")  # another host: not blocked
    done = threading.Event()
    t = threading.Thread(target=lambda: (c("phase", phase="container", state="start"), done.set()))
    t.start()
    assert not done.wait(0.2)
    a.release_all()  # a failed between its events
    assert done.wait(2)
    t.join()


def test_a_freed_slot_goes_to_the_first_ranked_waiter_not_the_first_to_ask() -> None:
    admission = Admission(Limits(downloads=1, ceph_writes=1, criu_per_host=1))
    holder = RestoreGate(admission, "h", rank=0)
    holder("phase", phase="fetch", state="start")
    served: list[int] = []
    threads = []
    for rank in (3, 1, 2):  # they ask in this order, each once the one before waits
        gate = RestoreGate(admission, "h", rank=rank)

        def run(gate: RestoreGate = gate) -> None:
            gate("phase", phase="fetch", state="start")
            served.append(gate.rank)
            gate("phase", phase="fetch", state="done")

        threads.append(threading.Thread(target=run))
        threads[-1].start()
        deadline = time.monotonic() + 5
        while admission._slots["download"].waiting() < len(threads) and time.monotonic() < deadline:
            time.sleep(0.005)
    assert admission._slots["download"].waiting() == 3
    holder("phase", phase="fetch", state="done")
    for t in threads:
        t.join(5)
    assert served == [1, 2, 3]


def test_equal_ranks_are_served_in_arrival_order_and_over_release_is_refused() -> None:
    slots = RankedSlots(1)
    slots.acquire(0)
    served: list[str] = []
    threads = []
    for name in ("first", "second", "third"):

        def run(name: str = name) -> None:
            slots.acquire(0)
            served.append(name)
            slots.release()

        threads.append(threading.Thread(target=run))
        threads[-1].start()
        deadline = time.monotonic() + 5
        while slots.waiting() < len(threads) and time.monotonic() < deadline:
            time.sleep(0.005)
    slots.release()
    for t in threads:
        t.join(5)
    assert served == ["first", "second", "third"]
    with pytest.raises(ValueError):
        slots.release()


def test_no_limits_means_nobody_waits() -> None:
    admission = Admission(None)
    gates = [RestoreGate(admission, "h") for _ in range(50)]
    for g in gates:
        g("phase", phase="container", state="start")
    assert admission.document() == {}


def test_time_to_a_fraction_counts_failed_desktops_as_never_up() -> None:
    items = [FleetItem(f"d{i}", status="ok", up_seconds=float(i)) for i in range(1, 10)] + [
        FleetItem("bad", status="failed")
    ]
    assert time_to_fraction(items, 0.5) == 5.0
    assert time_to_fraction(items, 0.9) == 9.0
    assert time_to_fraction(items, 1.0) is None  # one never came up: the fleet was never all up


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        (["ok", "ok"], EXIT_OK),
        (["ok", "objective_missed"], EXIT_OBJECTIVE_MISSED),
        (["ok", "failed"], EXIT_PARTIAL),
        (["failed", "failed"], EXIT_FAILED),
        (["ok", "skipped"], EXIT_OK),
    ],
)
def test_exit_codes(statuses: list[str], code: int) -> None:
    report = FleetReport("storm", items=[FleetItem(f"d{i}", status=s) for i, s in enumerate(statuses)])
    assert report.exit_code == code


# ---------------------------------------------------------------------- planning and running


def _services(tmp_path: Path, policies: dict[str, dict[str, Any]]) -> Services:
    (tmp_path / "policies").mkdir()
    (tmp_path / "drsvc.key").write_text("00" * 32)
    for name, doc in policies.items():
        (tmp_path / "policies" / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    config = parse_config({"catalog": {"path": "catalog.db"}, "keys": {"file": "drsvc.key"}}, tmp_path / "d.toml")
    return Services(config, Catalog.open(config.catalog.path))


def _desktop(catalog: Catalog, name: str, tier: str, tenant: str = "acme", node: str | None = None) -> None:
    catalog.upsert_desktop(
        {
            "id": name,
            "runtime_url": "podman:///x",
            "container": name,
            "volume": f"rados://desktops/{name}",
            "tenant": tenant,
            "labels": {"tier": tier},
            "node": node,
        }
    )
    catalog.add_point(
        {
            "id": f"p-{name}",
            "desktop_id": name,
            "taken_at": "2026-12-01T00:00:00Z",
            "status": "complete",
            "consistency": "paired",
        }
    )
    catalog.set_tier(f"p-{name}", "cold", "s3://x")


def _policy(name: str, tier: str, priority: int, rto: str) -> dict[str, Any]:
    return {
        "name": name,
        "selector": {"labels": {"tier": tier}},
        "schedule": "@hourly",
        "priority": priority,
        "objectives": {"rto": rto},
    }


@pytest.fixture
def fleet(tmp_path: Path) -> Services:
    services = _services(
        tmp_path,
        {
            "exec": _policy("exec", "executive", 1, "30s"),
            "std": _policy("std", "standard", 50, "30s"),
            "fast": _policy("fast", "kiosk", 50, "10s"),
        },
    )
    for name, tier in (("s-b", "standard"), ("k-1", "kiosk"), ("e-1", "executive"), ("s-a", "standard")):
        _desktop(services.catalog, name, tier, tenant="globex" if name == "k-1" else "acme", node="n2")
    _desktop(services.catalog, "lonely", "none", node="n2")
    services.__dict__["runtime"] = object()  # the restores are fakes: no container runtime is used
    services.__dict__["cold"] = object()
    return services


def test_the_plan_orders_by_priority_then_rto_target_then_id(fleet: Services) -> None:
    desktops = select_desktops(fleet.catalog, fleet.policies, everything=True)
    items = plan_fleet(fleet, desktops)
    assert [(i.desktop, i.priority, i.target_seconds) for i in items] == [
        ("e-1", 1, 30.0),
        ("k-1", 50, 10.0),
        ("s-a", 50, 30.0),
        ("s-b", 50, 30.0),
        ("lonely", 100, 30.0),  # no policy covers it: last, with the default target
    ]
    assert [i.rank for i in items] == [1, 2, 3, 4, 5] and all(i.tier == "cold" for i in items)
    assert [d["id"] for d in select_desktops(fleet.catalog, fleet.policies, tenant="globex")] == ["k-1"]
    assert len(select_desktops(fleet.catalog, fleet.policies, node="n2")) == 5
    with pytest.raises(NotFound, match="no desktop has node 'n1' \\(known: n2"):  # a typo, not an empty storm
        select_desktops(fleet.catalog, fleet.policies, node="n1")
    with pytest.raises(NotFound, match="no desktop has tenant 'acme2'"):
        select_desktops(fleet.catalog, fleet.policies, tenant="acme2")
    assert select_desktops(fleet.catalog, fleet.policies, node="n2", tenant="globex", policy="std") == []
    with pytest.raises(InvalidInput, match="--all, --node N, --tenant T"):
        select_desktops(fleet.catalog, fleet.policies)


@dataclass
class FakeRestores:
    """Stands in for RestoreJob: phases as events, a scripted duration and failure per desktop."""

    seconds: dict[str, float]
    fail: set[str] = field(default_factory=set)
    active: dict[str, int] = field(default_factory=dict)
    most: dict[str, int] = field(default_factory=dict)  # phase -> most desktops in it at once
    lock: threading.Lock = field(default_factory=threading.Lock)
    # ``lead``: the others ask for their first slot only once this desktop holds its first one (when
    # several ask at once, which thread reaches a free slot first is the OS scheduler's choice)
    lead: str | None = None
    lead_through: threading.Event = field(default_factory=threading.Event)

    def factory(self, services: Any, on_event: Any = None, relocate: Any = None) -> Any:
        fake = self

        class Plan:
            def __init__(self, desktop: str) -> None:
                self.desktop, self.container_state, self.target_seconds = desktop, None, 30.0
                self.name, self.as_name, self.manifest = desktop, None, {}

        class Job:
            def plan(self, desktop: str, **kw: Any) -> Plan:
                return Plan(desktop)

            def run(self, plan: Plan, **kw: Any) -> Any:
                if fake.lead is not None and plan.desktop != fake.lead:
                    assert fake.lead_through.wait(5), f"{fake.lead} never got its first slot"
                for phase in ("volume", "container"):
                    on_event("phase", phase=phase, state="start")  # waits for the phase's slot
                    if plan.desktop == fake.lead:
                        fake.lead_through.set()
                    with fake.lock:
                        fake.active[phase] = fake.active.get(phase, 0) + 1
                        fake.most[phase] = max(fake.most.get(phase, 0), fake.active[phase])
                    time.sleep(fake.seconds[plan.desktop] / 2)
                    with fake.lock:
                        fake.active[phase] -= 1
                    on_event("phase", phase=phase, state="done", seconds=0.0)
                if plan.desktop in fake.fail:
                    raise DrsvcError(f"criu failed for {plan.desktop}")
                return type("R", (), {"rto_seconds": fake.seconds[plan.desktop], "phases": {}, "checks": {}})()

        return Job()


def test_a_storm_restores_in_order_within_the_limits_and_records_every_desktop(
    fleet: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = plan_fleet(fleet, select_desktops(fleet.catalog, fleet.policies, everything=True))
    # the others' phases outlast the first desktop's whole restore: it is up first by a wide margin
    seconds = {"e-1": 0.1, "k-1": 0.3, "s-a": 0.3, "s-b": 0.3, "lonely": 0.3}
    fake = FakeRestores(seconds, fail={"s-b"}, lead="e-1")
    monkeypatch.setattr("drsvc.storm.RestoreJob", fake.factory)
    started: list[str] = []
    job = FleetRestore(
        fleet,
        fleet.catalog,
        parallel=5,
        limits=Limits(downloads=1, ceph_writes=1, criu_per_host=1),
        on_event=lambda kind, **f: started.append(f["item"].desktop) if kind == "started" else None,
    )
    report = job.run(items, selection="--all")
    # taken (and announced) in plan order, whichever of the five threads runs first
    assert started == ["e-1", "k-1", "s-a", "s-b", "lonely"]
    assert report.exit_code == EXIT_PARTIAL
    doc = report.document()
    assert doc["summary"]["up"] == 4 and doc["summary"]["failed"] == 1
    assert "criu failed for s-b" in next(d["error"] for d in doc["desktops"] if d["desktop"] == "s-b")
    assert doc["summary"]["first_up_seconds"] <= doc["summary"]["p50_up_seconds"]
    assert doc["summary"]["all_up_seconds"] is None  # one failed: the fleet was never all up
    # the first through the slots is up first: the others queue behind it, they do not slow it down
    ups = sorted((i.up_seconds, i.desktop) for i in report.items if i.up)
    assert ups[0][1] == "e-1"
    # one ceph and one criu slot: never two volume or two container phases at once, but both overlap
    assert fake.most == {"volume": 1, "container": 1}
    rows = fleet.catalog.query("SELECT * FROM site_recovery_desktops ORDER BY rank")
    assert [r["desktop_id"] for r in rows] == ["e-1", "k-1", "s-a", "s-b", "lonely"]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed", "ok"]
    [run] = fleet.catalog.query("SELECT * FROM site_recoveries")
    assert run["kind"] == "storm" and run["status"] == "partial" and '"downloads": 1' in run["admission"]
    # what a person reads: each desktop with its RTO, the failure's reason, the fleet's times
    from io import StringIO

    from rich.console import Console

    from drsvc.cli._fleet import render

    out = StringIO()
    render(report, Console(file=out, width=240, no_color=True))
    text = out.getvalue()
    assert "restore storm: 5 desktop(s), 5 in flight, admission downloads 1" in text
    assert "criu failed for s-b" in text and "up: 4/5 (4 within target, 1 failed, 0 skipped)" in text
    s = doc["summary"]
    assert f"time to first up {s['first_up_seconds']:.1f} s, 50 % {s['p50_up_seconds']:.1f} s" in text
    assert "all - s" in text  # never all up: one failed
    e1 = next(line for line in text.splitlines() if " e-1 " in line)
    assert f"{next(i.up_seconds for i in report.items if i.desktop == 'e-1'):.1f}" in e1


def test_everything_at_once_has_no_bounds(fleet: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    items = plan_fleet(fleet, select_desktops(fleet.catalog, fleet.policies, everything=True))
    fake = FakeRestores(dict.fromkeys(("e-1", "k-1", "s-a", "s-b", "lonely"), 0.3))
    monkeypatch.setattr("drsvc.storm.RestoreJob", fake.factory)
    report = FleetRestore(fleet, fleet.catalog, parallel=5, limits=None).run(items)
    assert report.exit_code == EXIT_OK and fake.most == {"volume": 5, "container": 5}


def test_storm_cli_argument_rules(fleet: Services, run_cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "d.toml"
    config.write_text('[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n')
    bad = run_cli("--config", str(config), "restore", "alice", "--all")
    assert bad.code == 2 and "make a storm: they take no DESKTOP" in bad.stderr
    bad = run_cli("--config", str(config), "restore")
    assert bad.code == 2 and "name a DESKTOP" in bad.stderr
    bad = run_cli("--config", str(config), "restore", "alice", "--parallel", "3")
    assert bad.code == 2 and "make a storm: they take no DESKTOP" in bad.stderr
    bad = run_cli("--config", str(config), "restore", "--all", "--point", "p-e-1")
    assert bad.code == 2 and "a storm (--all, --node, --tenant, --pool) takes no --at" in bad.stderr
    dry = run_cli("--config", str(config), "--json", "restore", "--all", "--dry-run")
    assert dry.code == 0, dry.output
    assert [d["desktop"] for d in dry.json()["desktops"]] == ["e-1", "k-1", "s-a", "s-b", "lonely"]
    assert fleet.catalog.query("SELECT * FROM site_recoveries") == []  # a dry run records nothing
    # --policy narrows a storm (alone or with --tenant/--node); a single restore takes none
    narrowed = run_cli("--config", str(config), "--json", "restore", "--tenant", "acme", "--policy", "std", "--dry-run")
    assert narrowed.code == 0, narrowed.output
    assert [d["desktop"] for d in narrowed.json()["desktops"]] == ["s-a", "s-b"]
    assert narrowed.json()["selection"] == "--tenant acme --policy std"
    alone = run_cli("--config", str(config), "--json", "restore", "--policy", "exec", "--dry-run")
    assert alone.code == 0 and [d["desktop"] for d in alone.json()["desktops"]] == ["e-1"], alone.output
    bad = run_cli("--config", str(config), "restore", "alice", "--policy", "std")
    assert bad.code == 2 and "make a storm: they take no DESKTOP" in bad.stderr
    unknown = run_cli("--config", str(config), "restore", "--all", "--policy", "nope", "--dry-run")
    assert unknown.code == 3 and "nope" in unknown.stderr, unknown.output


def test_a_desktop_without_a_point_fails_only_when_it_is_down(fleet: Services) -> None:
    for name in ("never-backed-up", "new-and-running"):
        fleet.catalog.upsert_desktop(
            {"id": name, "runtime_url": "podman:///x", "container": name, "tenant": "acme", "labels": {}}
        )

    class Runtime:
        def inspect(self, name: str) -> Any:
            return type("Ref", (), {"state": "running" if name == "new-and-running" else "exited"})()

    fleet.__dict__["runtime"] = Runtime()
    items = {i.desktop: i for i in plan_fleet(fleet, select_desktops(fleet.catalog, fleet.policies, tenant="acme"))}
    assert items["never-backed-up"].status == "failed"
    assert "no restorable recovery point" in (items["never-backed-up"].error or "")
    assert items["new-and-running"].status == "skipped"  # running, untouched: nothing to restore
    assert items["e-1"].status == "planned"
