"""Object digests in two forms: BLAKE3 (``b3:`` + hex, what new points record) and blake2b-256 (bare
hex, what points written before hold). Every check hashes in the form of the digest it checks, so
old points and points mixing both forms (incremental capture copies unchanged objects' entries from
the parent) restore and verify, a flipped byte fails with exit 4 in either form, and ``points diff``
never reports the same content under two forms as a change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from deployment import Deployment, digests, volume_for
from granularkit import GranularKit, Obj

from drsvc import clock
from drsvc.errors import IntegrityError
from drsvc.granular import listing
from drsvc.granular.reader import open_point
from drsvc.volumes import base
from drsvc.volumes.base import (
    BLAKE2B,
    BLAKE3,
    ObjectHasher,
    VolumeObject,
    digest_form,
    digest_streams,
    object_digest,
    valid_digest,
)

# What drsvc recorded before BLAKE3 (computed by the drsvc of main 49a69d3): the first form is
# pinned, so points written then keep verifying; the BLAKE3 form is pinned as today's format.
HELLO = ([b"hello ", b"world"], {"user.a": b"1"}, {"k": b"v"})
HELLO_BLAKE2B = "0af1634627cf703b8bc6f7dbc7a1094adda955ba9a046b59b02b87adfdef6eec"
EMPTY_BLAKE2B = "ed5f62f1558f7c714cfbf71d08729bee5bfcbc0ac7bfa286fcca020c7b632599"
HELLO_BLAKE3 = "b3:6687ff5fe3bb6a630d18981dd2971f1102c80cf9c77f0edd0d3c93beb227a4ec"
EMPTY_BLAKE3 = "b3:2f59ea96069b01681797d01fd00de33f797eb99be98b5b23e66a0c4c4124bfdb"


def test_both_forms_are_pinned_and_new_digests_are_blake3() -> None:
    assert object_digest(*HELLO, form=BLAKE2B) == HELLO_BLAKE2B
    assert object_digest([], {}, {}, BLAKE2B) == EMPTY_BLAKE2B
    assert object_digest(*HELLO) == HELLO_BLAKE3 and object_digest(*HELLO, form=BLAKE3) == HELLO_BLAKE3
    assert object_digest([], {}, {}) == EMPTY_BLAKE3
    # one hasher, either form: chunking does not matter, data/xattrs/omap all count
    for form in (BLAKE2B, BLAKE3):
        h = ObjectHasher(form)
        for piece in (b"hel", b"", b"lo world"):
            h.update(piece)
        assert h.finish({"user.a": b"1"}, {"k": b"v"}) == object_digest(*HELLO, form=form)
        assert object_digest([b"hello world"], {"user.a": b"2"}, {"k": b"v"}, form) != object_digest(*HELLO, form=form)


def test_the_form_is_told_by_the_text_and_anything_else_is_no_digest() -> None:
    assert digest_form(HELLO_BLAKE3) == BLAKE3 and digest_form(HELLO_BLAKE2B) == BLAKE2B
    assert ObjectHasher.like(HELLO_BLAKE3).form == BLAKE3 and ObjectHasher.like(HELLO_BLAKE2B).form == BLAKE2B
    assert valid_digest(HELLO_BLAKE3) and valid_digest(HELLO_BLAKE2B)
    for bad in [
        HELLO_BLAKE3[:-1],
        HELLO_BLAKE2B + "0",
        HELLO_BLAKE3.upper(),
        "b2:" + HELLO_BLAKE2B,
        "b3:" + HELLO_BLAKE2B + "\n",
        HELLO_BLAKE2B + "\n",
        "b3:",
        "",
        None,
        7,
        b"0" * 64,
    ]:
        assert not valid_digest(bad), bad
    with pytest.raises(ValueError, match="unknown object digest form"):
        ObjectHasher("md5")


def test_a_check_hashes_each_object_in_the_form_its_recorded_digest_is() -> None:
    objs = [VolumeObject("a", 5, {"user.x": b"1"}), VolumeObject("b", 3, {}, {"k": b"v"}), VolumeObject("c", 0)]
    data = {"a": [b"he", b"llo"], "b": [b"abc"], "c": []}

    def streams() -> Any:
        return ((o, iter(data[o.name])) for o in objs)

    recorded = {
        "a": object_digest(data["a"], objs[0].xattrs, objs[0].omap, BLAKE2B),
        "b": object_digest(data["b"], objs[1].xattrs, objs[1].omap, BLAKE3),
    }
    got = digest_streams(streams(), like=recorded)
    assert got["a"] == recorded["a"] and got["b"] == recorded["b"]
    assert digest_form(got["c"]) == BLAKE3  # not recorded: today's form
    assert all(digest_form(d) == BLAKE3 for d in digest_streams(streams()).values())


# ------------------------------------------------------------------ whole restores (fake runtime and volumes)
def _rewrite_manifests(deploy: Deployment, pid: str, change: Any) -> dict[str, Any]:
    """Apply ``change`` to the point's manifest in every store holding it (as another drsvc wrote it)."""
    services = deploy.services()
    doc: dict[str, Any] = {}
    for fleet in (services.hot, services.cold):
        if any(p == pid for _, p in fleet.list_manifests()):
            store = fleet.keyed(fleet.manifest_keys(fleet.get_sealed_manifest("alice", pid)[1]))  # its own key
            doc = store.get_manifest("alice", pid)
            change(doc)
            store.put_manifest("alice", pid, doc)
    return doc


def _old_form(objects: dict[str, Any], names: set[str] | None = None) -> Any:
    def change(doc: dict[str, Any]) -> None:
        for entry in doc["volume"]["objects"]:
            if names is None or entry["name"] in names:
                data, xattrs, omap = objects[entry["name"]]
                entry["digest"] = object_digest([data], xattrs, omap, BLAKE2B)

    return change


def _restore(deploy: Deployment, *extra: str) -> Any:
    return deploy.cli("--json", "restore", "alice", "--force", "--verify", *extra)


def test_a_point_mixing_both_forms_restores_and_verifies_from_every_copy(deploy: Deployment) -> None:
    objects = deploy.desktop("alice", seed=3)
    (pid,) = deploy.backup_at(clock.now() - timedelta(hours=1), "alice")
    assert deploy.cli("tier").code == 0
    old_names = set(sorted(objects)[::2])
    doc = _rewrite_manifests(deploy, pid, _old_form(objects, old_names))
    forms = {e["name"]: digest_form(e["digest"]) for e in doc["volume"]["objects"]}
    assert {forms[n] for n in old_names} == {BLAKE2B} and {forms[n] for n in set(objects) - old_names} == {BLAKE3}
    for extra in ((), ("--tier", "cold")):
        deploy.world.write_volume("desktops", "alice", volume_for(9, "alice"))  # something else to undo
        r = _restore(deploy, *extra)
        assert r.code == 0, r.output
        assert r.json()["checks"]["data"] == f"{len(objects)} objects match the manifest's digests"
        assert digests(deploy.world.read_volume("desktops", "alice")) == digests(objects)


def test_a_point_written_before_blake3_restores_and_verifies(deploy: Deployment, monkeypatch: Any) -> None:
    objects = deploy.desktop("alice", seed=4)
    with monkeypatch.context() as m:
        m.setattr(base, "DIGEST_FORM", BLAKE2B)  # the drsvc of before
        (pid,) = deploy.backup_at(clock.now() - timedelta(hours=1), "alice")
    manifest = deploy.services().hot.get_manifest("alice", pid)
    assert {digest_form(e["digest"]) for e in manifest["volume"]["objects"]} == {BLAKE2B}
    assert deploy.cli("tier").code == 0
    for extra in ((), ("--tier", "cold")):
        deploy.world.write_volume("desktops", "alice", volume_for(9, "alice"))
        r = _restore(deploy, *extra)
        assert r.code == 0, r.output
        assert digests(deploy.world.read_volume("desktops", "alice")) == digests(objects)


@pytest.mark.parametrize("form", [BLAKE2B, BLAKE3])
def test_a_flipped_byte_fails_verification_with_exit_4_in_either_form(
    deploy: Deployment, monkeypatch: Any, form: str
) -> None:
    objects = deploy.desktop("alice", seed=5)
    with monkeypatch.context() as m:
        m.setattr(base, "DIGEST_FORM", form)
        (pid,) = deploy.backup_at(clock.now() - timedelta(hours=1), "alice")
    # the pool snapshot is read unauthenticated: only the digest can catch a byte flipped there
    services = deploy.services()
    manifest = services.hot.get_manifest("alice", pid)
    assert {digest_form(e["digest"]) for e in manifest["volume"]["objects"]} == {form}
    volume = services.volume(manifest["volume"]["url"])
    snap_dir: Path = volume._at(manifest["volume"]["pool_snapshot"])  # type: ignore[attr-defined]
    victim = max(snap_dir.glob("*.data"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.unlink()  # the snapshot shares the file with the live volume: replace it, never edit it
    victim.write_bytes(bytes(data))
    r = _restore(deploy)
    assert r.code == 4, r.output
    assert "differs from the manifest" in r.output and "1 different" in r.output
    assert "Traceback" not in r.output
    assert len(objects) == len(manifest["volume"]["objects"])


# ------------------------------------------------------------------ single objects and points diff
def _objs() -> dict[str, Obj]:
    return {
        "a": Obj(b"alpha" * 1000, {"user.k": b"1"}, {}),
        "b": Obj(b"bravo" * 3000, {}, {"o": b"2"}),
        "c": Obj(b"", {}, {}),
        "d": Obj(b"delta" * 50, {}, {}),
    }


@pytest.fixture
def kit(tmp_path: Path) -> GranularKit:
    return GranularKit(tmp_path)


def test_single_objects_of_a_mixed_point_read_back_checked_and_a_wrong_digest_fails(kit: GranularKit) -> None:
    objs = _objs()
    pid = kit.point("desk-1", objs, forms={"a": BLAKE2B, "c": BLAKE2B})
    source = open_point(kit.services, kit.catalog.point(pid), kit.catalog.desktop("desk-1"))
    assert {n: digest_form(source.entry(n).digest) for n in objs} == {
        "a": BLAKE2B,
        "b": BLAKE3,
        "c": BLAKE2B,
        "d": BLAKE3,
    }
    for name, o in objs.items():
        assert b"".join(source.open_object(source.entry(name), ["hot"])[1]) == o.data
    # a digest of either form that the data does not match fails after the last byte
    for name, wrong in (("a", object_digest([b"x"], {}, {}, BLAKE2B)), ("b", object_digest([b"x"], {}, {}))):
        entry = source.entry(name)
        entry.digest = wrong
        with pytest.raises(IntegrityError, match="does not match its digest"):
            b"".join(source.read_object(entry, "hot"))


def _diff(run_cli: Any, kit: GranularKit, a: str, b: str) -> dict[str, Any]:
    result = run_cli("--config", str(kit.config), "--json", "points", "diff", a, b)
    assert result.code == 0, result.output
    doc: dict[str, Any] = result.json()
    return doc


def test_points_diff_across_forms_reports_only_real_changes(kit: GranularKit, run_cli: Any) -> None:
    before = _objs()
    after = dict(before)
    after["b"] = Obj(b"BRAVO" * 3000, {}, {"o": b"2"})  # same size and metadata, other bytes
    after["d"] = Obj(b"delta" * 50, {"user.new": b"x"}, {})  # xattrs only
    t0 = datetime.now(UTC) - timedelta(hours=2)
    old = {n: BLAKE2B for n in before}
    a = kit.point("desk-1", before, taken_at=t0, forms=old)
    b = kit.point("desk-1", after, taken_at=t0 + timedelta(minutes=30))
    doc = _diff(run_cli, kit, a, b)
    assert {c["name"]: c["what"] for c in doc["changed"]} == {"b": ["data"], "d": ["xattrs"]}
    assert doc["unchanged"] == 2 and doc["added"] == doc["removed"] == []
    # no versions recorded: a, b and c (same size and metadata each) were read to tell; d was not
    assert doc["read"] == 3
    # the same content under two forms, either way round, is no change
    same = kit.point("desk-1", before, taken_at=t0 + timedelta(minutes=40))
    assert _diff(run_cli, kit, a, same)["changed"] == []
    assert _diff(run_cli, kit, same, a)["changed"] == []
    text = run_cli("--config", str(kit.config), "points", "diff", a, same).stdout
    assert "0 changed, 4 unchanged" in text and "read to compare" in text


def test_points_diff_across_forms_trusts_versions_of_one_pool(kit: GranularKit, run_cli: Any) -> None:
    objs = _objs()
    t0 = datetime.now(UTC) - timedelta(hours=2)
    v1 = {"a": 10, "b": 11, "c": 12, "d": 13}
    a = kit.point("desk-1", objs, taken_at=t0, forms=dict.fromkeys(objs, BLAKE2B), versions=v1)
    b = kit.point("desk-1", objs, taken_at=t0 + timedelta(minutes=5), versions={**v1, "b": 40})
    doc = _diff(run_cli, kit, a, b)
    # a, c, d: one version of one pool, so unchanged unread; b was rewritten (same bytes): read, same
    assert doc["changed"] == [] and doc["unchanged"] == 4 and doc["read"] == 1


def test_versions_vouch_only_within_one_volume_and_pool_and_without_a_reader_nothing_vouches() -> None:
    def manifest(form: str, scope: str, url: str = "rados://desktops/d") -> dict[str, Any]:
        entry = {"name": "o", "size": 5, "digest": object_digest([b"hello"], {}, {}, form), "version": 7}
        stamps = {"kind": "rados-user-version", "scope": scope}
        return {"volume": {"url": url, "stamps": stamps, "objects": [entry]}}

    old, new = manifest(BLAKE2B, "rados:fsid:1"), manifest(BLAKE3, "rados:fsid:1")
    asked: list[str] = []

    def reader(before: Any, after: Any) -> bool:
        asked.append(after.name)
        return True

    assert listing.diff(old, new, reader).changed == [] and asked == []  # one pool's version vouches
    for other in (manifest(BLAKE3, "rados:fsid:2"), manifest(BLAKE3, "rados:fsid:1", "rados://desktops/e")):
        result = listing.diff(old, other, reader)
        assert result.changed == [] and result.read == ["o"] and asked.pop() == "o"
        # nothing to read with: the object cannot be shown unchanged, so it is listed as changed
        assert [c.name for c in listing.diff(old, other).changed] == ["o"]
    # one form: compared as it is, never read
    assert listing.diff(new, manifest(BLAKE3, "rados:fsid:2"), reader).changed == [] and asked == []
