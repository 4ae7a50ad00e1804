"""A clone restore's writer mark (``drsvc.restore-writer``) is drsvc's own metadata, never content.

A clone restore creates each object carrying its run's mark and keeps it (no per-object removal):
what cleanup after a kill -9 compares, and nothing else. Capture (xattrs, digests, manifests),
restore's data check, ``points diff`` and ``restore --object`` never see it, so a clone that keeps
its marks is equal to its point; it never enters a point, and a restore never writes anyone's mark
but its own. Content is compared with what the test wrote (``volume_for``), not drsvc's digests.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from deployment import Deployment, digests, volume_for

from drsvc import clock
from drsvc.volumes import base
from drsvc.volumes.base import WRITER_XATTR, VolumeObject, digest_streams

HOUR = timedelta(hours=1)


def _point(d: Deployment, desktop: str) -> dict[str, Any]:
    """The latest point of ``desktop`` with its manifest's objects by name."""
    point = d.cli("--json", "points", "list", desktop).json()[0]
    manifest = d.services().hot.get_manifest(desktop, point["id"])
    return {"id": point["id"], "objects": {o["name"]: o for o in manifest["volume"]["objects"]}}


def _clone_mark(d: Deployment, volume: str) -> str:
    [row] = d.services().catalog.query(
        "SELECT detail FROM intents WHERE kind = 'clone-volume' AND target = ?", [f"fakevol://desktops/{volume}"]
    )
    return str(json.loads(row["detail"])["mark"])


def _promote(d: Deployment, clone: str) -> None:
    """The operator keeps a clone as a desktop of its own: same namespace, no drsvc.clone-of label."""
    d.world.remove_container(clone)
    d.world.add_desktop(clone)


def test_the_reserved_xattr_is_no_part_of_an_objects_content() -> None:
    marked = VolumeObject("a", 5, {"user.x": b"1", WRITER_XATTR: b"7.0123456789abcdef"}, {"k": b"v"})
    plain = VolumeObject("a", 5, {"user.x": b"1"}, {"k": b"v"})
    assert marked == plain and marked.xattrs == {"user.x": b"1"}
    assert digest_streams([(marked, iter([b"hello"]))]) == digest_streams([(plain, iter([b"hello"]))])
    assert base.is_reserved_xattr(WRITER_XATTR)
    # only that name: a tenant's own xattrs, drsvc-looking or not, are content
    for name in ("user.x", "drsvc.restore-writer2", "drsvc.other", "DRSVC.RESTORE-WRITER", ""):
        assert not base.is_reserved_xattr(name), name
    assert VolumeObject("b", 0, {"drsvc.other": b"1"}).xattrs == {"drsvc.other": b"1"}


def test_a_clone_keeps_its_writer_mark_and_restores_verified(deploy: Deployment) -> None:
    """No per-object removal: every object of a kept clone carries the run's mark, the intent has no
    `written` (cleanup compares the mark, object by object), and --verify passes with the marks on."""
    deploy.desktop("alice", seed=1)
    deploy.backup_at(clock.now() - HOUR, "alice")
    for tier in ("hot", "cold"):
        if tier == "cold":
            assert deploy.cli("tier").code == 0
        clone = f"alice-{tier}"
        r = deploy.cli("--json", "restore", "alice", "--as", clone, "--tier", tier, "--verify")
        assert r.code == 0, r.output
        assert "objects match the manifest's digests" in r.json()["checks"]["data"]
        left = deploy.world.read_volume("desktops", clone)
        assert digests(left) == digests(volume_for(1, "alice"))  # content: the mark left out
        mark = _clone_mark(deploy, clone)
        assert {x.get(WRITER_XATTR) for _, x, _ in left.values()} == {mark.encode()}, (
            f"{tier}: not every object kept its mark"
        )
        [row] = deploy.services().catalog.query(
            "SELECT state, detail FROM intents WHERE kind = 'clone-volume' AND target = ?",
            [f"fakevol://desktops/{clone}"],
        )
        assert row["state"] == "kept" and "written" not in json.loads(row["detail"]), row


def test_a_kept_clone_backs_up_equal_to_its_point_and_its_mark_never_enters_a_point(deploy: Deployment) -> None:
    deploy.desktop("alice", seed=1)
    deploy.backup_at(clock.now() - 2 * HOUR, "alice")
    source = _point(deploy, "alice")
    assert deploy.cli("restore", "alice", "--as", "alice-x").code == 0
    _promote(deploy, "alice-x")
    # what an older drsvc's clone or a tenant leaves: marks that are not this run's
    live = deploy.world.read_volume("desktops", "alice-x")
    name = sorted(live)[0]
    data, xattrs, omap = live[name]
    live[name] = (data, {**xattrs, WRITER_XATTR: b"set by the tenant"}, omap)
    deploy.world.write_volume("desktops", "alice-x", live)

    deploy.backup_at(clock.now() - HOUR, "alice-x")
    marked = _point(deploy, "alice-x")
    for entry in marked["objects"].values():
        assert WRITER_XATTR not in entry["xattrs"], entry
    # equal to the point it was restored from, object by object (the same digests)
    assert {n: o["digest"] for n, o in marked["objects"].items()} == {
        n: o["digest"] for n, o in source["objects"].items()
    }

    # the marks gone (an older drsvc took them off): the next point is no change
    deploy.world.write_volume(
        "desktops",
        "alice-x",
        {n: (d, {k: v for k, v in x.items() if k != WRITER_XATTR}, o) for n, (d, x, o) in live.items()},
    )
    deploy.backup_at(clock.now(), "alice-x")
    plain = _point(deploy, "alice-x")
    r = deploy.cli("--json", "points", "diff", marked["id"], plain["id"])
    assert r.code == 0, r.output
    doc = r.json()
    assert (doc["added"], doc["removed"], doc["changed"]) == ([], [], []), doc
    assert doc["unchanged"] == len(source["objects"])

    # the marks back (a kept clone's rollback): a single object from the unmarked point is already there
    deploy.world.write_volume("desktops", "alice-x", live)
    r = deploy.cli("--json", "restore", "alice-x", "--object", name, "--point", plain["id"])
    assert r.code == 0, r.output
    assert [o["status"] for o in r.json()["objects"]] == ["unchanged"], r.output

    # restored in place with the marks in the namespace: the data check ignores them
    r = deploy.cli("--json", "restore", "alice-x", "--force", "--verify", "--point", marked["id"])
    assert r.code == 0, r.output
    assert "objects match the manifest's digests" in r.json()["checks"]["data"]


def test_a_restore_writes_no_mark_but_its_own(deploy: Deployment) -> None:
    """A manifest naming the reserved xattr (a point an older drsvc took of a tenant who set it) is
    restored without it: into an empty namespace each object carries this run's mark only, in place none."""
    deploy.desktop("alice", seed=1)
    theirs = volume_for(1, "alice")
    objects = [VolumeObject(n, len(d), {**x, WRITER_XATTR: b"older"}, o) for n, (d, x, o) in theirs.items()]
    assert all(WRITER_XATTR not in o.xattrs for o in objects)
    volume = deploy.services().volume("fakevol://desktops/alice-w")
    volume.write_objects([(o, iter([theirs[o.name][0]])) for o in objects], fresh=True, mark="9.feedfacefeedface")
    assert {x[WRITER_XATTR] for _, x, _ in deploy.world.read_volume("desktops", "alice-w").values()} == {
        b"9.feedfacefeedface"
    }
    volume.write_objects([(o, iter([theirs[o.name][0]])) for o in objects])  # in place: no mark
    assert all(WRITER_XATTR not in x for _, x, _ in deploy.world.read_volume("desktops", "alice-w").values())
