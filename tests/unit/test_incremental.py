"""Incremental volume capture, below the volume: which parent groups are taken unread, and streams
composed of reused chunk runs and new objects (ChunkStore.write_parts) that read back exactly."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from drsvc import incremental
from drsvc.chunks import ChunkStore, Reuse, StreamRef
from drsvc.crypto import Keys
from drsvc.errors import IntegrityError
from drsvc.restore import _split_objects
from drsvc.storage import open_store
from drsvc.volume_capture import VolumeCapture
from drsvc.volumes import base
from drsvc.volumes.base import VolumeObject, object_digest

KiB = 1024
SCOPE = "rados:fsid:7"
URL = "rados://desktops/alice"


@pytest.fixture
def hot(tmp_path: Path) -> ChunkStore:
    return ChunkStore.init(open_store(f"file://{tmp_path}/hot"), Keys(os.urandom(32)))


def sizes_mixed(rng: random.Random, n: int) -> list[int]:
    # small objects (cut together), large ones (each its own chunks), a few empty
    return [rng.choice([0, rng.randint(1, 60 * KiB), rng.randint(130 * KiB, 900 * KiB)]) for _ in range(n)]


class MemoryVolume:
    """A versioned volume in memory (a test double of VersionedVolume): objects with versions, snapshots."""

    def __init__(self, url: str = URL) -> None:
        self.url, self.scope = url, "mem://pool"
        self.live: dict[str, tuple[bytes, dict[str, bytes], dict[str, bytes], int]] = {}
        self.snaps: dict[str, dict[str, tuple[bytes, dict[str, bytes], dict[str, bytes], int]]] = {}
        self.clock = 0
        self.reads: list[str] = []  # names whose data was read

    def put(
        self, name: str, data: bytes, xattrs: dict[str, bytes] | None = None, omap: dict[str, bytes] | None = None
    ) -> None:
        self.clock += 1
        self.live[name] = (data, xattrs or {}, omap or {}, self.clock)

    def snapshot(self, name: str) -> None:
        self.snaps[name] = dict(self.live)

    def stamp_scope(self) -> str:
        return SCOPE

    def stamps_at(self, snap: str, names: list[str] | None = None) -> list[VolumeObject]:
        at = self.snaps[snap]
        chosen = sorted(at) if names is None else sorted(n for n in set(names) if n in at)
        return [VolumeObject(n, len(at[n][0]), version=at[n][3]) for n in chosen]

    def objects_at(self, snap: str, names: list[str] | None = None) -> list[VolumeObject]:
        at = self.snaps[snap]
        chosen = sorted(at) if names is None else sorted(n for n in names if n in at)
        return [VolumeObject(n, len(at[n][0]), at[n][1], at[n][2], version=at[n][3]) for n in chosen]

    def read_objects_at(self, snap: str, objects: Any = None) -> Any:
        for o in objects if objects is not None else self.objects_at(snap):
            self.reads.append(o.name)
            data = self.snaps[snap][o.name][0]
            yield o, iter([data[i : i + 50_000] for i in range(0, len(data), 50_000)] or [])


class LastPoint:
    """ParentFinder stand-in: the previous capture of this test."""

    def __init__(self) -> None:
        self.found: tuple[str, dict[str, Any]] | None = None

    def find(self, desktop: str) -> tuple[str, dict[str, Any]] | None:
        return self.found


def capture(hot: ChunkStore, vol: MemoryVolume, parents: LastPoint, snap: str, full_every: int = 24) -> dict[str, Any]:
    vol.reads.clear()
    section, _ = VolumeCapture(hot, parents).capture(vol, "alice", snap, full_every=full_every)  # type: ignore[arg-type]
    section["url"] = vol.url
    manifest = {"volume": section}
    parents.found = (snap, manifest)
    return section


def restored(hot: ChunkStore, section: dict[str, Any]) -> dict[str, tuple[bytes, dict[str, bytes], dict[str, bytes]]]:
    """What restore writes back: the stream cut by the manifest's sizes, with xattrs and omap."""
    stream = hot.read_stream(StreamRef.from_dict(section["stream"]))
    out = {}
    for obj, pieces in _split_objects(section["objects"], stream):
        out[obj.name] = (b"".join(pieces), obj.xattrs, obj.omap)
    return out


def fill(vol: MemoryVolume, rng: random.Random, n: int) -> None:
    for i, size in enumerate(sizes_mixed(rng, n)):
        xattrs = {"user.i": str(i).encode()} if i % 3 == 0 else {}
        omap = {"k": rng.randbytes(8)} if i % 5 == 0 else {}
        vol.put(f"obj{i:03d}", rng.randbytes(size), xattrs, omap)


def oracle(vol: MemoryVolume, snap: str) -> dict[str, tuple[bytes, dict[str, bytes], dict[str, bytes]]]:
    return {n: (v[0], v[1], v[2]) for n, v in vol.snaps[snap].items()}


def test_nothing_changed_reuses_everything_and_reads_nothing(hot: ChunkStore) -> None:
    vol, parents = MemoryVolume(), LastPoint()
    fill(vol, random.Random(2), 40)
    vol.snapshot("s1")
    first = capture(hot, vol, parents, "s1")
    assert first["capture"]["mode"] == "full" and len(vol.reads) == 40
    vol.snapshot("s2")
    second = capture(hot, vol, parents, "s2")
    assert second["capture"]["mode"] == "incremental" and vol.reads == []
    assert second["capture"]["read_bytes"] == 0 and second["capture"]["hot_bytes_read"] == 0
    assert second["stream"]["chunks"] == first["stream"]["chunks"] and second["stream"]["hash"].startswith("chunks:")
    assert second["objects"] == first["objects"]
    assert restored(hot, second) == oracle(vol, "s2")


def mutate(vol: MemoryVolume, rng: random.Random) -> set[str]:
    """Random changes; the names that changed (deleted ones included)."""
    changed = set()
    for _ in range(rng.randint(0, 7)):
        kind = rng.choice(["write", "same-size", "truncate", "append", "xattr", "omap", "delete", "recreate", "create"])
        names = sorted(vol.live)
        if kind == "create" or not names:
            name = f"obj{rng.randint(0, 99):03d}{rng.choice(['', 'a', 'z'])}"
            vol.put(name, rng.randbytes(size_of_new(rng)))
            changed.add(name)
            continue
        name = rng.choice(names)
        data, xattrs, omap, _ = vol.live[name]
        if kind == "write":
            data = rng.randbytes(size_of_new(rng))
        elif kind == "same-size":
            data = rng.randbytes(len(data))
        elif kind == "truncate":
            data = data[: rng.randint(0, len(data))]
        elif kind == "append":
            data += rng.randbytes(rng.randint(1, 200 * KiB))
        elif kind == "xattr":
            xattrs = {**xattrs, "user.x": rng.randbytes(4)}
        elif kind == "omap":
            omap = {**omap, "k2": rng.randbytes(4)}
        elif kind == "delete":
            del vol.live[name]
            changed.add(name)
            continue
        vol.put(name, data, xattrs, omap)  # "recreate": same bytes, a new version
        changed.add(name)
    return changed


def size_of_new(rng: random.Random) -> int:
    return rng.choice([0, rng.randint(1, 60 * KiB), rng.randint(130 * KiB, 700 * KiB)])


@pytest.mark.parametrize("seed", range(20))
def test_random_changes_read_exactly_the_changed_objects_and_restore_exactly(hot: ChunkStore, seed: int) -> None:
    rng = random.Random(seed)
    vol, parents = MemoryVolume(), LastPoint()
    fill(vol, rng, rng.randint(0, 60))
    for round_no in range(7):
        changed = mutate(vol, rng) if round_no else set()
        snap = f"s{round_no}"
        vol.snapshot(snap)
        section = capture(hot, vol, parents, snap, full_every=4)
        assert restored(hot, section) == oracle(vol, snap), f"round {round_no}"
        assert [o["name"] for o in section["objects"]] == sorted(vol.snaps[snap])
        if section["capture"]["mode"] == "incremental":
            assert set(vol.reads) == changed & set(vol.snaps[snap]), f"round {round_no}: read only what changed"
            # kept bytes of a changed object's neighbours come from at most the chunks around each change
            assert section["capture"]["hot_bytes_read"] <= len(changed) * 3 * hot.params.max_size
        else:
            assert round_no % 4 == 0 and set(vol.reads) == set(vol.snaps[snap])
        # every manifest digest is the digest of what restore gets back
        for entry in section["objects"]:
            data, xattrs, omap = oracle(vol, snap)[entry["name"]]
            assert entry["digest"] == object_digest([data], xattrs, omap)


def test_a_small_object_changed_in_a_long_run_costs_its_own_bytes(hot: ChunkStore) -> None:
    vol, parents = MemoryVolume(), LastPoint()
    rng = random.Random(4)
    for i in range(600):  # 600 small objects, one run: ~6 MiB cut together
        vol.put(f"doc{i:04d}", rng.randbytes(rng.randint(1, 20 * KiB)))
    vol.snapshot("s1")
    first = capture(hot, vol, parents, "s1")
    vol.put("doc0300", rng.randbytes(5 * KiB), {"user.tag": b"x"})
    vol.snapshot("s2")
    second = capture(hot, vol, parents, "s2")
    assert vol.reads == ["doc0300"]
    assert second["capture"]["hot_bytes_read"] <= 3 * hot.params.max_size
    new = set(map(tuple, second["stream"]["chunks"])) - set(map(tuple, first["stream"]["chunks"]))
    assert sum(n for _, n in new) <= 3 * hot.params.max_size, "only the chunks around the change are new"
    assert restored(hot, second) == oracle(vol, "s2")


def test_when_everything_is_read(hot: ChunkStore) -> None:
    vol, parents = MemoryVolume(), LastPoint()
    fill(vol, random.Random(3), 10)
    vol.snapshot("s1")
    capture(hot, vol, parents, "s1")
    stamps = vol.stamps_at("s1")
    _, manifest = parents.found  # type: ignore[misc]
    parent = manifest["volume"]
    args: dict[str, Any] = {"parent_id": "p1", "parent_since_full": 0, "full_every": 24, "url": URL, "scope": SCOPE}

    def why(volume: Any = parent, **kw: Any) -> str | None:
        return incremental.plan(stamps, volume, **{**args, **kw}).why_full

    assert why(None) == "no earlier point to build on"
    assert "full_every" in str(why(parent_since_full=23)) and why(parent_since_full=22) is None
    assert "another volume" in str(why(url="rados://desktops/bob"))
    assert "pool" in str(why(scope="rados:other:7"))
    assert "versions" in str(why({**parent, "objects": [{**o, "version": None} for o in parent["objects"]]}))
    biggest = max(parent["objects"], key=lambda o: o["size"])
    assert "line up" in str(why({**parent, "objects": [o for o in parent["objects"] if o is not biggest]}))
    # an object whose version is unknown now is read, whatever else matches
    plan = incremental.plan([VolumeObject(o.name, o.size) for o in stamps], parent, **args)
    assert {o.name for o in plan.to_read} == {o.name for o in stamps}


def test_a_volume_without_versions_is_read_whole(hot: ChunkStore) -> None:
    class Plain(MemoryVolume):
        stamp_scope = None  # type: ignore[assignment]

    vol, parents = Plain(), LastPoint()
    fill(vol, random.Random(6), 5)
    vol.snapshot("s1")
    capture(hot, vol, parents, "s1")
    vol.snapshot("s2")
    section = capture(hot, vol, parents, "s2")
    assert section["capture"]["why_full"] == "this volume type has no object versions" and len(vol.reads) == 5


def test_a_parent_under_another_data_key_is_not_built_on(hot: ChunkStore) -> None:
    vol, parents = MemoryVolume(), LastPoint()
    fill(vol, random.Random(7), 8)
    vol.snapshot("s1")
    capture(hot.for_tenant("acme"), vol, parents, "s1")
    vol.snapshot("s2")
    section = capture(hot, vol, parents, "s2")
    assert "another data key" in section["capture"]["why_full"]


def test_a_tenants_points_build_on_each_other_under_the_tenants_key(hot: ChunkStore) -> None:
    vol, parents = MemoryVolume(), LastPoint()
    rng = random.Random(11)
    fill(vol, rng, 30)
    vol.snapshot("s1")
    acme = hot.for_tenant("acme")
    capture(acme, vol, parents, "s1")
    changed = mutate(vol, rng)
    vol.snapshot("s2")
    section = capture(hot.for_tenant("acme"), vol, parents, "s2")
    assert section["capture"]["mode"] == "incremental", section["capture"]
    assert section["stream"]["data_key"] == acme.write_keys.key_id != hot.write_keys.key_id
    assert set(vol.reads) == changed & set(vol.snaps["s2"])
    assert restored(hot, section) == oracle(vol, "s2")


def test_reusing_a_chunk_that_is_not_stored_fails(hot: ChunkStore, tmp_path: Path) -> None:
    ref = hot.write_bytes(os.urandom(300 * KiB))
    other = ChunkStore.init(open_store(f"file://{tmp_path}/other"), hot.keys)
    with pytest.raises(IntegrityError, match="not in the store"):
        other.write_parts([Reuse(tuple(ref.chunks))])
    assert other.missing(c for c, _ in ref.chunks) == {c for c, _ in ref.chunks}
    assert hot.missing(c for c, _ in ref.chunks) == set()


def test_a_composed_stream_with_a_wrong_list_hash_is_refused(hot: ChunkStore) -> None:
    ref = hot.write_parts([[(100, [b"x" * 100])]])
    bad = StreamRef(ref.chunks, ref.size, "chunks:" + "0" * 64)
    with pytest.raises(IntegrityError):
        hot.read_bytes(bad)
    assert hot.read_bytes(ref) == b"x" * 100


def test_names_from_a_batch_listing_capture_what_the_volume_own_listing_captures(tmp_path: Path) -> None:
    """A backup batch lists its pool once and hands each desktop its names: names the listing holds
    that are absent at the snapshot (created since) are left out, and both captures are equal."""
    stores = [ChunkStore.init(open_store(f"file://{tmp_path}/{k}"), Keys(b"k" * 32)) for k in ("own", "given")]
    vol = MemoryVolume()
    fill(vol, random.Random(9), 30)
    vol.snapshot("s1")
    vol.put("created-after-s1", b"not at s1")
    listing = sorted(vol.live)  # what a listing taken after the snapshot names
    sections = []
    for hot, names in zip(stores, (None, listing), strict=True):
        parents = LastPoint()
        vol.reads.clear()
        first, _ = VolumeCapture(hot, parents).capture(vol, "alice", "s1", full_every=24, names=names)  # type: ignore[arg-type]
        parents.found = ("s1", {"volume": {**first, "url": vol.url}})
        vol.snapshot("s2")
        second, _ = VolumeCapture(hot, parents).capture(vol, "alice", "s2", full_every=24, names=names)  # type: ignore[arg-type]
        sections.append((first, second))
    (own1, own2), (given1, given2) = sections
    assert given1["objects"] == own1["objects"] and given1["stream"] == own1["stream"]
    assert "created-after-s1" not in {o["name"] for o in given1["objects"]}
    assert given2["capture"]["mode"] == own2["capture"]["mode"] == "incremental"
    assert {o["name"] for o in given2["objects"]} == set(listing)  # s2 holds the created object
    assert given2["objects"] == own2["objects"] and given2["stream"] == own2["stream"]
    assert restored(stores[1], given2) == oracle(vol, "s2")


@pytest.mark.parametrize("seed", range(6))
def test_stamps_taken_ahead_of_the_listing_are_not_taken_again_and_capture_the_same(tmp_path: Path, seed: int) -> None:
    """A backup batch stats the parent point's objects while its listing runs (``stamped``): the
    capture stats only the names the listing adds, and captures exactly what it captures without."""
    rng = random.Random(seed)
    stores = [ChunkStore.init(open_store(f"file://{tmp_path}/{k}"), Keys(b"k" * 32)) for k in ("own", "ahead")]
    vol = MemoryVolume()
    fill(vol, rng, 30)
    vol.snapshot("s1")
    first, _ = VolumeCapture(stores[0], LastPoint()).capture(vol, "alice", "s1", full_every=24)  # type: ignore[arg-type]
    parent_names = [o["name"] for o in first["objects"]]
    mutate(vol, rng)
    vol.put(f"new-{seed}", rng.randbytes(1000))  # the listing names an object the parent does not
    vol.snapshot("s2")
    listing = sorted(vol.live)
    asked: list[list[str]] = []
    stamps_at = vol.stamps_at

    def counted(snap: str, names: list[str] | None = None) -> list[VolumeObject]:
        asked.append(sorted(names) if names is not None else ["(all)"])
        return stamps_at(snap, names)

    vol.stamps_at = counted  # type: ignore[method-assign]
    ahead = {o.name: o for o in vol.stamps_at("s2", parent_names)}
    sections = []
    for hot, stamped in zip(stores, (None, ahead), strict=True):
        if hot is stores[1]:
            VolumeCapture(hot, LastPoint()).capture(vol, "alice", "s1", full_every=24)  # type: ignore[arg-type]
        parents = LastPoint()
        parents.found = ("s1", {"volume": {**first, "url": vol.url}})
        asked.clear()
        second, _ = VolumeCapture(hot, parents).capture(  # type: ignore[arg-type]
            vol, "alice", "s2", full_every=24, names=listing, stamped=stamped
        )
        sections.append((second, list(asked)))
    (own, own_asked), (given, given_asked) = sections
    assert own_asked == [listing]
    assert given_asked == [sorted(set(listing) - ahead.keys())] and f"new-{seed}" in given_asked[0]
    assert given["capture"]["mode"] == own["capture"]["mode"] == "incremental"
    assert given["objects"] == own["objects"] and given["stream"]["chunks"] == own["stream"]["chunks"]
    assert restored(stores[1], given) == oracle(vol, "s2")


def test_one_pool_listing_groups_names_by_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    """``names_by_volume`` reads ONE all-namespaces listing: names of the asked namespaces, sorted and
    without repeats (a listing can repeat a name deleted since a snapshot), others ignored."""
    from types import SimpleNamespace

    from drsvc import ceph
    from drsvc.errors import InvalidInput
    from drsvc.volumes import rados_snapshots

    listed = [("a", "z"), ("b", "x"), ("a", "m"), ("", "default-ns"), ("a", "z"), ("other", "q")]

    class Io:
        namespace: str | None = None
        listings = 0

        def set_namespace(self, ns: str) -> None:
            self.namespace = ns

        def list_objects(self) -> Any:
            Io.listings += 1
            assert self.namespace == "ALL"
            return iter(SimpleNamespace(nspace=ns, key=k, locator_key=None) for ns, k in listed)

        def close(self) -> None:
            pass

    monkeypatch.setattr(ceph, "rados_module", lambda: SimpleNamespace(LIBRADOS_ALL_NSPACES="ALL"))
    monkeypatch.setattr(rados_snapshots, "_ioctx", lambda *_a: Io())
    pool = rados_snapshots.RadosPoolSnapshots("desktops")
    urls = ["rados://desktops/a", "rados://desktops/b", "rados://desktops/empty"]
    assert pool.names_by_volume(urls) == {urls[0]: ["m", "z"], urls[1]: ["x"], urls[2]: []}
    assert Io.listings == 1
    with pytest.raises(InvalidInput):
        pool.names_by_volume(["rados://otherpool/a"])


def test_one_volume_lists_its_namespace_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of one desktop lists its namespace only: the OSDs scan the same objects, and the
    other desktops' names of the pool never come back to be dropped here."""
    from types import SimpleNamespace

    from drsvc import ceph
    from drsvc.volumes import rados_snapshots

    pool_objects = [("a", "z"), ("b", "x"), ("a", "m"), ("a", "z")]

    class Io:
        namespace: str | None = None

        def set_namespace(self, ns: str) -> None:
            self.namespace = ns

        def list_objects(self) -> Any:
            listed = [(ns, k) for ns, k in pool_objects if self.namespace in ("ALL", ns)]
            return iter(SimpleNamespace(nspace=ns, key=k, locator_key=None) for ns, k in listed)

        def close(self) -> None:
            pass

    io = Io()
    monkeypatch.setattr(ceph, "rados_module", lambda: SimpleNamespace(LIBRADOS_ALL_NSPACES="ALL"))
    monkeypatch.setattr(rados_snapshots, "_ioctx", lambda *_a: io)
    pool = rados_snapshots.RadosPoolSnapshots("desktops")
    assert pool.names_by_volume(["rados://desktops/a"]) == {"rados://desktops/a": ["m", "z"]}
    assert io.namespace == "a"
    assert pool.names_by_volume(["rados://desktops/a", "rados://desktops/b"]) == {
        "rados://desktops/a": ["m", "z"],
        "rados://desktops/b": ["x"],
    }
    assert io.namespace == "ALL"


def test_object_digests_taken_on_the_digest_thread_match_and_keep_order() -> None:
    """Digests hashed beside the capture (small batches, a small window: the capture waits) equal
    ``object_digest`` of each object, listed in the order asked, however the pieces were cut."""
    from drsvc.volume_capture import _Entries

    rng = random.Random(5)
    objs = []
    for i in range(40):
        data = rng.randbytes(rng.choice([0, 1, 700, 5000, 40_000]))
        obj = VolumeObject(f"o{i:02}", len(data), {"user.a": bytes([i])}, {"k": b"v" * i})
        objs.append((obj, [data[j : j + 999] for j in range(0, len(data), 999)] or [b""]))
    seen: list[int] = []
    with _Entries(seen.append, batch=3000, window=6000) as entries:
        passed = [b"".join(pieces) for _, pieces in entries.objects(objs)]
        listed = entries.listed([o.name for o, _ in reversed(objs)])
    assert passed == [b"".join(p) for _, p in objs]  # pieces pass through unchanged, in order
    assert sum(seen) == sum(o.size for o, _ in objs)
    want = [object_digest(p, o.xattrs, o.omap) for o, p in reversed(objs)]
    assert [e["digest"] for e in listed] == want
    assert [e["name"] for e in listed] == [o.name for o, _ in reversed(objs)]


def test_a_point_built_on_a_parent_of_the_first_digest_form_mixes_forms_and_every_digest_checks(
    hot: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unchanged objects keep the parent's entry, digest included (blake2b, written before BLAKE3);
    objects read again get today's BLAKE3 digest; each checks in its own form."""
    vol, parents = MemoryVolume(), LastPoint()
    fill(vol, random.Random(5), 30)
    vol.snapshot("s1")
    with monkeypatch.context() as m:
        m.setattr(base, "DIGEST_FORM", base.BLAKE2B)
        first = capture(hot, vol, parents, "s1")
    assert {base.digest_form(o["digest"]) for o in first["objects"]} == {base.BLAKE2B}
    changed = {"obj003", "obj017"}
    for name in changed:
        vol.put(name, b"new bytes of " + name.encode())
    vol.snapshot("s2")
    second = capture(hot, vol, parents, "s2")
    assert second["capture"]["mode"] == "incremental" and set(vol.reads) == changed
    forms = {o["name"]: base.digest_form(o["digest"]) for o in second["objects"]}
    assert {n for n, f in forms.items() if f == base.BLAKE3} == changed
    recorded = {o["name"]: o["digest"] for o in second["objects"]}
    at_s2 = [(VolumeObject(n, len(d), x, o), iter([d])) for n, (d, x, o) in oracle(vol, "s2").items()]
    assert base.digest_streams(at_s2, like=recorded) == recorded
    assert restored(hot, second) == oracle(vol, "s2")


def test_a_pool_listing_that_meets_a_name_not_utf8_lists_again_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The binding's pool listing stops at the first name that is not UTF-8 in any namespace; one
    tenant's such name made every desktop of the batch scan the pool for its own. The pool is then
    listed again through the C API (``rados_odd``: names as bytes; the lab test proves it drops the
    tenant's namespace alone), and only where that cannot be had does the error stand."""
    from drsvc import ceph
    from drsvc.volumes import rados_snapshots

    def refuses(self: object, by_namespace: dict[str, str]) -> dict[str, list[str]]:
        raise ceph.NotUtf8Name("list the objects of pool desktops: the name 'bad\\xff' is not UTF-8")

    monkeypatch.setattr(rados_snapshots.RadosPoolSnapshots, "_names_by_namespace", refuses)
    asked: list[set[str]] = []

    def by_bytes(conn: object, pool: str, namespaces: set[str], *, bound: int) -> dict[str, list[str]] | None:
        asked.append(namespaces)
        return {"a": ["m", "z"]}  # b held the name: left out

    monkeypatch.setattr(rados_snapshots.rados_odd, "names_by_namespace", by_bytes)
    pool = rados_snapshots.RadosPoolSnapshots("desktops")
    urls = ["rados://desktops/a", "rados://desktops/b"]
    assert pool.names_by_volume(urls) == {urls[0]: ["m", "z"]}
    assert asked == [{"a", "b"}]
    monkeypatch.setattr(rados_snapshots.rados_odd, "names_by_namespace", lambda *_a, **_k: None)
    with pytest.raises(ceph.NotUtf8Name):
        pool.names_by_volume(urls)
