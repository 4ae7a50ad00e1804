"""Inventory on a real catalog with the FAKE runtime: what discover records, what select picks."""

from __future__ import annotations

import pytest
from deployment import Deployment

from drsvc.errors import NotFound
from drsvc.inventory import discover, policies_of, select


def test_discover_records_desktops_skips_clones_and_marks_the_gone(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.world.add_desktop("eve", {}, tenant="globex", labels={"team": "red"}, node="n2")
    deploy.world.add_desktop("alice-copy", {}, labels={"drsvc.clone-of": "alice"})
    services = deploy.services()
    found, gone = discover(services)
    assert sorted(d.desktop_id for d in found) == ["alice", "eve"] and gone == []
    rows = {d["id"]: d for d in services.catalog.desktops()}
    assert set(rows) == {"alice", "eve"}
    assert (rows["eve"]["tenant"], rows["eve"]["labels"]["team"], rows["eve"]["node"]) == ("globex", "red", "n2")
    assert rows["alice"]["volume"] == "fakevol://desktops/alice" and rows["alice"]["runtime_url"] == "fake://fleet"
    assert policies_of(services, rows["alice"]) == ["standard"] and policies_of(services, rows["eve"]) == []

    deploy.world.remove_container("eve")
    _, gone = discover(services)
    assert gone == ["eve"]
    assert {d["id"]: d["gone_since"] is not None for d in services.catalog.desktops()} == {"alice": False, "eve": True}
    deploy.world.add_desktop("eve", {}, tenant="globex")
    discover(services)
    assert all(d["gone_since"] is None for d in services.catalog.desktops()), "a desktop that came back is live"


def test_select_by_name_or_policy(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.desktop("bob")
    deploy.world.add_desktop("eve", {}, tenant="globex")
    services = deploy.services()
    assert [d.desktop_id for d in select(services, names=["bob", "alice"])] == ["bob", "alice"]
    assert sorted(d.desktop_id for d in select(services, policy="standard")) == ["alice", "bob"]
    with pytest.raises(NotFound, match=r"unknown desktop 'carol' \(running desktops: alice, bob, eve\)"):
        select(services, names=["alice", "carol"])
