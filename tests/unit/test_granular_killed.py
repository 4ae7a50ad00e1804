"""A single-object restore killed -9 (a real SIGKILL of a child drsvc, at a named fault point) on the
FAKE runtime and volumes: the next run finishes it, cleanup records it failed, nothing is left half.

The fake volume writes each object whole; that RADOS does too for a restored object (one operation,
never the first pieces of it) is the lab's test (tests/integration/test_faults_lab.py).
"""

from __future__ import annotations

import hashlib

from deployment import Deployment

from drsvc.volumes.base import VolumeObject

NAME = "docs/report.odt"


def _digest(deploy: Deployment, name: str) -> str | None:
    volume = deploy.services().volume("fakevol://desktops/alice")
    current = volume.stat(name)
    if current is None:
        return None
    return hashlib.sha256(b"".join(piece for _o, data in volume.read_objects([current]) for piece in data)).hexdigest()


def _changed_since_the_point(deploy: Deployment) -> tuple[str, str]:
    """alice backed up with NAME holding ``old``; NAME now holds ``new``: their digests."""
    old, new = b"the point's version " * 1000, b"today's version " * 900
    deploy.desktop("alice")
    volume = deploy.services().volume("fakevol://desktops/alice")
    volume.write_objects([(VolumeObject(NAME, len(old)), iter([old]))], exact=False)
    assert deploy.cli("backup", "alice").code == 0
    volume.write_objects([(VolumeObject(NAME, len(new)), iter([new]))], exact=False)
    return hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()


def test_a_killed_object_restore_is_recorded_failed_by_cleanup(deploy: Deployment) -> None:
    old, new = _changed_since_the_point(deploy)
    args = ("restore", "alice", "--object", NAME, "--overwrite")
    killed = deploy.run_child(*args, DRSVC_FAULT="mid-restore-volume:kill")
    assert killed.returncode == -9, killed.stderr
    assert _digest(deploy, NAME) == new, "killed before its write: the object is today's"
    catalog = deploy.services().catalog
    assert [r["status"] for r in catalog.query("SELECT status FROM object_restores")] == ["running"]
    assert deploy.cli("cleanup").code == 0
    [row] = catalog.query("SELECT status, error FROM object_restores")
    assert row["status"] == "failed" and "interrupted" in row["error"], row
    assert deploy.cli("restore", "alice", "--object", NAME, "--overwrite").code == 0
    assert _digest(deploy, NAME) == old


def test_a_keeping_object_restore_killed_after_its_copy_is_finished_by_the_same_command(deploy: Deployment) -> None:
    """Killed between keeping today's object aside and writing the point's: the kept copy is there,
    whole. The same command must go on (not refuse because "the kept name exists")."""
    old, new = _changed_since_the_point(deploy)
    killed = deploy.run_child("restore", "alice", "--object", NAME, DRSVC_FAULT="mid-restore-volume:kill@2")
    assert killed.returncode == -9, killed.stderr
    volume = deploy.services().volume("fakevol://desktops/alice")
    [kept] = [o.name for o in volume.objects_now() if o.name.startswith(NAME + ".drsvc-")]
    assert _digest(deploy, kept) == new and _digest(deploy, NAME) == new

    again = deploy.cli("restore", "alice", "--object", NAME)
    assert again.code == 0, again.output
    assert _digest(deploy, NAME) == old and _digest(deploy, kept) == new
    assert [o.name for o in volume.objects_now() if o.name.startswith(NAME + ".drsvc-")] == [kept]


def test_a_kept_copy_of_another_content_is_still_refused(deploy: Deployment) -> None:
    """The kept name holds something else than the object now (an earlier restore kept an older
    version, and the object changed since): never overwritten, the restore refuses as before."""
    _changed_since_the_point(deploy)
    assert deploy.cli("restore", "alice", "--object", NAME).code == 0
    volume = deploy.services().volume("fakevol://desktops/alice")
    other = b"changed again " * 500
    volume.write_objects([(VolumeObject(NAME, len(other)), iter([other]))], exact=False)
    refused = deploy.cli("restore", "alice", "--object", NAME)
    assert refused.code == 2 and "already exists" in refused.output, refused.output
    assert _digest(deploy, NAME) == hashlib.sha256(other).hexdigest()
