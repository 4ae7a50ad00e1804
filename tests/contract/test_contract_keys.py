"""drsvc keys list | rotate: exit 0; data keys per tenant, rotation keeps old points readable."""

from __future__ import annotations

from contractlib import assert_exit, contract
from deployment import Deployment, digests, volume_for


@contract("keys", 0)
def test_keys_list_and_rotate_keep_every_point_restorable(fleet: Deployment) -> None:
    r = fleet.cli("--json", "keys", "list")
    assert_exit(r, 0)
    assert "acme" in r.stdout
    before = r.stdout
    dry = fleet.cli("keys", "rotate", "--tenant", "acme", "--dry-run")
    assert_exit(dry, 0)
    assert fleet.cli("--json", "keys", "list").stdout == before, "a dry run wrote a key"
    assert_exit(fleet.cli("keys", "rotate", "--tenant", "acme"), 0)
    assert fleet.cli("--json", "keys", "list").stdout != before
    [first] = [p["id"] for p in fleet.cli("--json", "points", "list", "alice").json()]
    fleet.world.write_volume("desktops", "alice", volume_for(7, "alice"))
    backup = fleet.cli("--json", "backup", "alice")
    assert_exit(backup, 0)
    # ids of two points taken in one second need not sort by time: take each from where it was made
    [newest] = [o["point_id"] for o in backup.json()["results"]]
    # the point sealed with the old key and the one sealed with the new key both come back
    assert_exit(fleet.cli("restore", "alice", "--point", first, "--force", "--verify"), 0)
    assert digests(fleet.world.read_volume("desktops", "alice")) == digests(volume_for(1, "alice"))
    assert_exit(fleet.cli("restore", "alice", "--point", newest, "--force", "--verify"), 0)
    assert digests(fleet.world.read_volume("desktops", "alice")) == digests(volume_for(7, "alice"))


@contract("keys", 3)
def test_keys_rotate_of_a_tenant_nobody_has_is_not_found_and_mints_nothing(fleet: Deployment) -> None:
    before = fleet.cli("--json", "keys", "list").stdout
    r = fleet.cli("keys", "rotate", "--tenant", "acmee")
    assert_exit(r, 3, "unknown tenant 'acmee'", "known: acme")
    assert fleet.cli("--json", "keys", "list").stdout == before, "a typo minted a key"
