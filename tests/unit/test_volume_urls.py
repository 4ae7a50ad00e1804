"""Volume URLs, the scheme registry, the object digest and pool snapshot names: no cluster needed."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from drsvc.backup import snapshot_name
from drsvc.errors import InvalidInput
from drsvc.volumes import (
    ObjectHasher,
    Volume,
    VolumeObject,
    digest_form,
    object_digest,
    open_volume,
    register_volume_scheme,
    registered_volume_schemes,
)
from drsvc.volumes import rados as rados_volumes


def test_rados_url_opens_lazily_with_pool_and_namespace():
    vol = open_volume("rados://desktops/desk-001")
    assert isinstance(vol, rados_volumes.RadosVolume)
    assert isinstance(vol, Volume)
    assert (vol.pool, vol.namespace) == ("desktops", "desk-001")
    assert vol.url == "rados://desktops/desk-001"
    assert vol.scope == "rados://desktops"
    assert vol.snapshots().scope == "rados://desktops"


@pytest.mark.parametrize(
    "url",
    [
        "rados://desktops",  # namespace required: the default namespace is never a desktop
        "rados://desktops/",
        "rados:///desk-001",
        "rados://desktops/desk-001/extra",
        "rados://desk tops/desk-001",
        "rados://desktops/desk 001",
        "rados://desktops/desk-001?x=1",
        "rados://desktops/desk-001#frag",
        "rados:/desktops/desk-001",
    ],
)
def test_malformed_rados_urls_name_the_url(url):
    with pytest.raises(InvalidInput) as e:
        open_volume(url)
    assert repr(url) in str(e.value)


@pytest.mark.parametrize("url", ["", "desktops/desk-001", "RADOS//x", "nosuch://pool/ns"])
def test_bad_or_unknown_schemes(url):
    with pytest.raises(InvalidInput) as e:
        open_volume(url)
    assert repr(url) in str(e.value)
    assert "rados://" in str(e.value)  # lists what is known


def test_registry_takes_factories_and_lazy_module_names(monkeypatch):
    import drsvc.volumes as volumes

    monkeypatch.setattr(volumes, "_REGISTRY", volumes._REGISTRY.copy())  # leave the real one alone
    opened: list[tuple[str, dict]] = []

    def factory(url: str, **options):
        opened.append((url, options))
        return rados_volumes.RadosVolume("p", "ns")

    register_volume_scheme("memvol", factory)
    register_volume_scheme("lazyvol", "drsvc.volumes.rados:from_url")
    register_volume_scheme("missingvol", "drsvc.volumes.nosuchbackend:from_url")
    assert {"memvol", "lazyvol", "rados"} <= set(registered_volume_schemes())
    open_volume("memvol://anything", window=4)
    assert opened == [("memvol://anything", {"window": 4})]
    with pytest.raises(InvalidInput, match="malformed volume URL"):
        open_volume("lazyvol://p/ns")  # the rados module only parses rados://
    with pytest.raises(InvalidInput, match="not installed"):
        open_volume("missingvol://p/ns")


def test_pool_snapshot_names_are_operator_readable_utc_and_unique():
    when = datetime(2026, 11, 27, 18, 30, 12, tzinfo=timezone(timedelta(hours=1)))
    names = {snapshot_name("standard", when, 1) for _ in range(20)}
    assert len(names) == 20  # two runs in one second, or two deployments sharing a pool
    assert all(re.fullmatch(r"drsvc-standard-20261127T173012Z-1-[0-9a-f]{4}", n) for n in names)
    assert snapshot_name(None, when, 3).startswith("drsvc-manual-20261127T173012Z-3-")


@pytest.mark.parametrize("form", ["blake2b", "blake3"])
def test_object_digest_covers_data_xattrs_omap_and_ignores_chunking(form: str) -> None:
    base = object_digest([b"hello ", b"world"], {"user.a": b"1"}, {"k": b"v"}, form)
    assert base == object_digest([b"hello world"], {"user.a": b"1"}, {"k": b"v"}, form)
    assert base == object_digest([b"hel", b"", b"lo world"], {"user.a": b"1"}, {"k": b"v"}, form)
    h = ObjectHasher(form)
    h.update(b"hello world")
    assert h.finish({"user.a": b"1"}, {"k": b"v"}) == base
    others = {
        object_digest([b"hello world!"], {"user.a": b"1"}, {"k": b"v"}, form),
        object_digest([b"hello world"], {"user.a": b"2"}, {"k": b"v"}, form),
        object_digest([b"hello world"], {}, {"k": b"v"}, form),
        object_digest([b"hello world"], {"user.a": b"1"}, {}, form),
        # the same key/value moved between xattrs and omap is a different object
        object_digest([b"hello world"], {"k": b"v"}, {"user.a": b"1"}, form),
        # boundaries between key and value are part of the encoding
        object_digest([b"hello world"], {"user.a": b"1"}, {"kv": b""}, form),
    }
    assert base not in others and len(others) == 6
    # the form says itself (b3: + 64 hex for BLAKE3, 64 bare hex for the first form)
    assert len(base) == (67 if form == "blake3" else 64) and digest_form(base) == form


def test_volume_object_equality_is_by_value():
    assert VolumeObject("a", 1, {"x": b"1"}, {}) == VolumeObject("a", 1, {"x": b"1"})
    assert VolumeObject("a", 1) != VolumeObject("a", 2)
