"""Objects a tenant names so that the Python binding cannot address them, on the real Ceph.

A desktop's processes hold librados credentials for their namespace. Besides any bytes as a name,
librados lets them give an object a *locator key* (``rados put NAME --object-locator L``): the
object is then placed by ``L`` and found only by (name, locator). The binding lists it by its name,
but every call drsvc makes by that name alone (stat, read, rollback, remove) addresses another,
absent object. A backup counted it as deleted since the snapshot and left it out of the point
without a word (exit 0: a silently incomplete point), and an in-place restore left it in the
namespace (it could not remove it: a restore that does not give back the point). A name that is
not UTF-8 (the binding refuses bytes for every object call and decodes every listed name) failed
the backup of its desktop alone, but also every restore of that desktop, in place or its clone's
teardown: the tenant could make its own desktop unrestorable, the very thing a restore is for.

Now: a backup of such a namespace fails that desktop alone, saying which object and why; a
restore in place (and a purge) removes every object the point does not hold, whatever its name
or locator (through librados' C API, which takes bytes).
"""

from __future__ import annotations

import contextlib
import subprocess

import pytest


def _rados(lab, namespace: str, *args: bytes, data: bytes | None = None) -> bytes:
    """The rados CLI on ``desktops``/``namespace`` with raw arguments, as a tenant's own client can."""
    conf = lab.ceph_conf.encode()
    cmd = [b"rados", b"-c", conf, b"-p", b"desktops", b"-N", namespace.encode(), *args]
    return subprocess.run(cmd, input=data, check=True, capture_output=True, timeout=60).stdout


def _listing(lab, namespace: str) -> set[tuple[bytes, ...]]:
    """(name,) or (name, locator) of every object, as the rados CLI lists them (bytes, no decoding)."""
    return {tuple(line.split(b"\t")) for line in _rados(lab, namespace, b"ls").splitlines()}


ODD = {
    "locator key": (b"hidden", b"L1"),
    "locator key not UTF-8": (b"hidden", b"L\xff"),
    "name not UTF-8": (b"bad\xffname", None),
}


def _put_odd(lab, namespace: str, kind: str) -> tuple[bytes, ...]:
    name, locator = ODD[kind]
    extra = (b"--object-locator", locator) if locator else ()
    _rados(lab, namespace, b"put", name, b"-", *extra, data=b"the tenant's\n")
    return (name, locator) if locator else (name,)


def _remove_odd(lab, namespace: str, entry: tuple[bytes, ...]) -> None:
    extra = (b"--object-locator", entry[1]) if len(entry) > 1 else ()
    with contextlib.suppress(subprocess.CalledProcessError):  # gone already when drsvc removed it
        _rados(lab, namespace, b"rm", entry[0], *extra)


@pytest.mark.parametrize("batch", ["pool listing", "own listing"])
def test_an_object_with_a_locator_key_fails_its_desktop_alone(drsvc_env, make_fleet, lab, monkeypatch, batch):
    from drsvc.volumes.rados_snapshots import RadosPoolSnapshots

    victim, attacker = make_fleet(2)
    entry = _put_odd(lab, attacker, "locator key")
    try:
        if batch == "own listing":
            monkeypatch.setattr(RadosPoolSnapshots, "names_by_volume", lambda *_a: {})
        result = drsvc_env.cli("--json", "backup", victim, attacker)
    finally:
        _remove_odd(lab, attacker, entry)
    assert result.code == 6, result.output  # was 0: the object silently left out of the point
    by_desktop = {o["desktop"]: o for o in result.json()["results"]}
    assert by_desktop[victim]["status"] == "complete", by_desktop[victim]
    assert by_desktop[attacker]["status"] == "failed", by_desktop[attacker]
    error = by_desktop[attacker].get("error") or ""
    assert "'hidden'" in error and "locator key" in error and "'L1'" in error, error


@pytest.mark.parametrize("kind", sorted(ODD))
@pytest.mark.parametrize("how", ["in place", "purge"])
def test_a_restore_removes_what_the_point_does_not_hold_whatever_its_name(drsvc_env, make_fleet, lab, kind, how):
    (desktop,) = make_fleet(1)
    taken = drsvc_env.cli("--json", "backup", desktop)
    assert taken.code == 0, taken.output
    before = _listing(lab, desktop)
    assert before and all(len(e) == 1 for e in before)
    entry = _put_odd(lab, desktop, kind)
    try:
        assert entry in _listing(lab, desktop)
        if how == "in place":
            restored = drsvc_env.cli("restore", desktop, "--force")
            assert restored.code == 0, restored.output
            assert _listing(lab, desktop) == before  # exactly the point's objects
        else:
            volume = drsvc_env.services().volume(f"rados://desktops/{desktop}")
            assert volume.purge() == len(before) + 1
            # the point's objects stay listed while its pool snapshot holds them; the odd one was made after
            assert entry not in _listing(lab, desktop)
    finally:
        _remove_odd(lab, desktop, entry)


def test_a_name_that_is_not_utf8_costs_no_other_desktop_its_shared_listing(drsvc_env, make_fleet, lab, monkeypatch):
    """A batch lists its pool once for all its desktops (listing a namespace scans the whole pool).
    The binding's listing of the pool raised at the first name that is not UTF-8 in any namespace,
    so one tenant's such name made every batch of the pool fall back to a scan per desktop, for as
    long as the tenant kept it. The pool is now listed through the C API (names as bytes): only the
    tenant's own desktop lists (and fails) on its own."""
    from drsvc.volumes import rados_scan

    victim, attacker = make_fleet(2)
    own_listings: list[str] = []
    real = rados_scan.list_names

    def spy(io, url, **kw):
        own_listings.append(url)
        return real(io, url, **kw)

    monkeypatch.setattr(rados_scan, "list_names", spy)
    entry = _put_odd(lab, attacker, "name not UTF-8")
    try:
        result = drsvc_env.cli("--json", "backup", victim, attacker)
    finally:
        _remove_odd(lab, attacker, entry)
    assert result.code == 6, result.output
    by_desktop = {o["desktop"]: o for o in result.json()["results"]}
    assert by_desktop[victim]["status"] == "complete", by_desktop[victim]
    assert "not UTF-8" in (by_desktop[attacker].get("error") or ""), by_desktop[attacker]
    assert own_listings == [f"rados://desktops/{attacker}"]  # the victim's names came from the batch's listing


@pytest.mark.parametrize("where", ["omap value", "xattr value"])
def test_an_empty_metadata_value_is_backed_up_and_drilled(drsvc_env, make_fleet, lab, where):
    """The pacific binding hands back an empty omap value as None, and drsvc's live reader made
    ``bytes(None)`` of it: a TypeError, not a drsvc error, in every read of the live namespace
    (``restore --verify``, each drill's verification, ``restore --object``), while the C API
    reader at the snapshot backed it up. A tenant's empty value must drill like any other."""
    victim, attacker = make_fleet(2)
    _rados(lab, attacker, b"put", b"plain", b"-", data=b"x\n")
    if where == "omap value":
        _rados(lab, attacker, b"setomapval", b"plain", b"k", b"")
    else:
        _rados(lab, attacker, b"setxattr", b"plain", b"user.empty", b"")
    taken = drsvc_env.cli("--json", "backup", victim, attacker)
    assert taken.code == 0, taken.output
    result = drsvc_env.cli("--json", "drill", victim, attacker, "--parallel", "2")
    assert result.code == 0, result.output
    by_desktop = {r["desktop"]: r for r in result.json()["results"]}
    assert by_desktop[victim]["passed"] and by_desktop[attacker]["passed"], by_desktop
