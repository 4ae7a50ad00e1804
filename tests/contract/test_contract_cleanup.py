"""drsvc cleanup [--dry-run]: what a killed backup left (a pool snapshot no point needs, a point
stuck pending) is named by the dry run, removed by the real run, and then nothing is left."""

from __future__ import annotations

from contractlib import assert_exit, contract
from deployment import Deployment
from waits import finish

from drsvc import faults


@contract("cleanup", 0)
def test_cleanup_removes_what_a_killed_backup_left_and_a_dry_run_only_names_it(deploy: Deployment) -> None:
    deploy.desktop("alice")
    assert_exit(deploy.cli("cleanup"), 0, "nothing left behind")
    proc = deploy.spawn("backup", "alice", **{faults.ENV: "after-snapshot:kill"})
    code, out, err = finish(proc, "the killed backup")
    assert code != 0, out + err
    dry = deploy.cli("--json", "cleanup", "--dry-run")
    assert_exit(dry, 0)
    planned = dry.json()
    assert planned["snapshots"], planned  # the snapshot made inside the freeze, recorded before it was made
    again = deploy.cli("--json", "cleanup", "--dry-run")
    assert again.json()["snapshots"] == planned["snapshots"], "a dry run removed something"
    r = deploy.cli("cleanup")
    assert_exit(r, 0, "removed pool snapshot", planned["snapshots"][0])
    assert_exit(deploy.cli("cleanup"), 0, "nothing left behind")
    statuses = {p["status"] for p in deploy.cli("--json", "points", "list").json()}
    assert statuses <= {"failed"}, statuses
