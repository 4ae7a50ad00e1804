"""Incremental volume capture on the lab: random changes between points (writes, truncates, appends,
xattr and omap changes, deletes, same-size re-creates), every point restored byte-exact from the hot
store, the pool snapshot and the cold store; the oracle is what this test wrote, read back with the
plain rados binding. Only changed objects are read (the manifests say how much, and the test checks
it against what it changed)."""

from __future__ import annotations

import contextlib
import copy
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import rados
from test_cold_tier import cold_env

from drsvc.chunks import StreamRef
from drsvc.errors import NotFound
from drsvc.restore import _split_objects
from drsvc.volumes import base

KiB, MiB = 1024, 1024 * 1024
PREFIX = "t-"  # the objects this test owns in the desktop's namespace
Obj = tuple[bytes, dict[str, bytes], dict[str, bytes]]


@pytest.fixture
def cold_bucket(lab: Any) -> Iterator[str]:
    from test_cold_tier import _purge_bucket

    name = f"drsvc-it-perf-{uuid.uuid4().hex[:8]}"
    yield name
    _purge_bucket(lab, name)


@pytest.fixture
def ioctx() -> Iterator[Any]:
    cluster = rados.Rados(conffile=os.environ["CEPH_CONF"])
    cluster.connect()
    io = cluster.open_ioctx("desktops")
    yield io
    io.close()
    cluster.shutdown()


def size_of(rng: random.Random) -> int:
    return rng.choice([rng.randint(0, 40 * KiB), rng.randint(1, 8 * KiB), rng.randint(140 * KiB, 1536 * KiB)])


class Writer:
    """Random changes to this test's objects, through plain librados, remembered as the oracle."""

    def __init__(self, io: Any, rng: random.Random) -> None:
        self.io, self.rng = io, rng
        self.objects: dict[str, Obj] = {}
        self.serial = 0

    def create(self, name: str | None = None, size: int | None = None) -> str:
        self.serial += 1
        name = name or f"{PREFIX}{self.rng.randint(0, 10**6):07d}-{self.serial}"
        data = self.rng.randbytes(self.rng.randint(0, 40 * KiB) if size is None else size)
        self.io.write_full(name, data)
        xattrs = {"user.n": str(self.serial).encode()} if self.rng.random() < 0.5 else {}
        for k, v in xattrs.items():
            self.io.set_xattr(name, k, v)
        omap = {f"k{i}": self.rng.randbytes(20) for i in range(self.rng.randint(0, 3))}
        if omap:
            with rados.WriteOpCtx() as op:
                self.io.set_omap(op, tuple(omap), tuple(omap.values()))
                self.io.operate_write_op(op, name)
        self.objects[name] = (data, xattrs, omap)
        return name

    def change(self) -> tuple[str, str]:
        """One random change; (kind, object name)."""
        kind = self.rng.choice(
            ["write", "same-size", "truncate", "append", "xattr", "rmxattr", "omap", "rmomap", "delete",
             "recreate-same", "create", "create-large"]
        )  # fmt: skip
        if kind in ("create", "create-large") or not self.objects:
            return "create", self.create(
                size=self.rng.randint(140 * KiB, 900 * KiB) if kind == "create-large" else None
            )
        name = self.rng.choice(sorted(self.objects))
        data, xattrs, omap = self.objects[name]
        if kind == "write":
            data = self.rng.randbytes(size_of(self.rng))
            self.io.write_full(name, data)
        elif kind == "same-size":
            data = self.rng.randbytes(len(data))
            self.io.write_full(name, data)
        elif kind == "truncate":
            data = data[: self.rng.randint(0, len(data))]
            self.io.trunc(name, len(data))
        elif kind == "append":
            extra = self.rng.randbytes(self.rng.randint(1, 300 * KiB))
            self.io.append(name, extra)
            data += extra
        elif kind == "xattr":
            xattrs = {**xattrs, "user.x": self.rng.randbytes(8)}
            self.io.set_xattr(name, "user.x", xattrs["user.x"])
        elif kind == "rmxattr" and xattrs:
            key = sorted(xattrs)[0]
            self.io.rm_xattr(name, key)
            xattrs = {k: v for k, v in xattrs.items() if k != key}
        elif kind == "omap":
            omap = {**omap, "k9": self.rng.randbytes(12)}
            with rados.WriteOpCtx() as op:
                self.io.set_omap(op, ("k9",), (omap["k9"],))
                self.io.operate_write_op(op, name)
        elif kind == "rmomap" and omap:
            key = sorted(omap)[0]
            with rados.WriteOpCtx() as op:
                self.io.remove_omap_keys(op, (key,))
                self.io.operate_write_op(op, name)
            omap = {k: v for k, v in omap.items() if k != key}
        elif kind == "delete":
            self.io.remove_object(name)
            del self.objects[name]
            return kind, name
        elif kind == "recreate-same":  # same bytes, same size, a new object
            self.io.remove_object(name)
            self.io.write_full(name, data)
            for k, v in xattrs.items():
                self.io.set_xattr(name, k, v)
            if omap:
                with rados.WriteOpCtx() as op:
                    self.io.set_omap(op, tuple(omap), tuple(omap.values()))
                    self.io.operate_write_op(op, name)
        self.objects[name] = (data, xattrs, omap)
        return kind, name


def read_raw(io: Any, namespace: str) -> dict[str, Obj]:
    """This test's objects in ``namespace``, read with the plain binding (not drsvc's code)."""
    io.set_namespace(namespace)
    out = {}
    for o in io.list_objects():
        if not o.key.startswith(PREFIX):
            continue
        try:
            size, _ = io.stat(o.key)
        except rados.ObjectNotFound:
            continue
        data = io.read(o.key, size + 1) if size else b""
        xattrs = {k: bytes(v) for k, v in io.get_xattrs(o.key)}
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals(op, "", "", 10000)
            io.operate_read_op(op, o.key)
            omap = {k: bytes(v) for k, v in it}
        out[o.key] = (data, xattrs, omap)
    return out


def say(text: str) -> None:
    """To the terminal even under capsys (run_cli captures stdout): the seed and what each point read."""
    sys.__stderr__.write(text + "\n")


def same(got: dict[str, Obj], want: dict[str, Obj], what: str) -> None:
    assert sorted(got) == sorted(want), f"{what}: object names differ"
    bad = [n for n in want if got[n] != want[n]]
    assert not bad, f"{what}: {len(bad)} object(s) differ, e.g. {bad[0]}"


def write_from_stream(services: Any, store: Any, manifest: dict[str, Any], url: str) -> None:
    """What restore does from a tier's chunks: the volume stream cut back into objects, written exactly."""
    stream = store.read_stream(StreamRef.from_dict(manifest["volume"]["stream"]))
    services.volume(url).write_objects(_split_objects(manifest["volume"]["objects"], stream), exact=True)


@pytest.mark.slow
def test_random_changes_between_points_restore_exactly_hot_and_cold(
    drsvc_env: Any, make_fleet: Any, ioctx: Any, cold_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = int(os.environ.get("DRSVC_TEST_SEED") or random.randrange(10**6))
    say(f"seed {seed} (DRSVC_TEST_SEED={seed} repeats this run)")
    rng = random.Random(seed)
    [desktop] = make_fleet(1, data_mib=2)
    cold_env(drsvc_env, cold_bucket)
    drsvc_env.policy(
        "inc",
        [desktop],
        capture={"checkpoint": False, "consistency": "crash", "full_every": 4},
        retention={"hot": {"last": 50}, "cold": {"last": 50}},
        tiering={"after": "1s", "storage_class": "STANDARD"},
    )
    ioctx.set_namespace(desktop)
    writer = Writer(ioctx, rng)
    for _ in range(25):
        writer.create(size=size_of(rng))
    points: list[tuple[str, dict[str, Obj], list[tuple[str, str]]]] = []
    for round_no in range(8):
        ioctx.set_namespace(desktop)
        changes = [] if round_no in (0, 3) else [writer.change() for _ in range(rng.randint(1, 7))]
        with monkeypatch.context() as m:
            if round_no < 2:  # the first two points as the drsvc before BLAKE3 wrote them: later ones mix
                m.setattr(base, "DIGEST_FORM", base.BLAKE2B)
            result = drsvc_env.cli("--json", "backup", "--policy", "inc")
        assert result.code == 0, (result.stdout, result.stderr)
        (outcome,) = result.json()["results"]
        points.append((outcome["point_id"], copy.deepcopy(writer.objects), changes))

    services = drsvc_env.services()
    hot = services.hot
    modes = []
    for i, (pid, oracle, changes) in enumerate(points):
        manifest = hot.get_manifest(desktop, pid)
        capture = manifest["volume"]["capture"]
        modes.append(capture["mode"])
        total = sum(o["size"] for o in manifest["volume"]["objects"])
        if capture["mode"] == "incremental":
            # exactly the objects this test changed are read (a change that did nothing is not read)
            changed = {n for _, n in changes} & set(oracle)
            assert capture["read_objects"] <= len(changed), (i, capture, changes)
            assert capture["read_bytes"] <= sum(len(oracle[n][0]) for n in changed), (i, capture, changes)
            assert capture["reused_objects"] == len(manifest["volume"]["objects"]) - capture["read_objects"]
        say(f"point {i}: {capture['mode']}, read {capture['read_objects']} objects / {capture['read_bytes']} B "
              f"of {total} B, changes {changes}")  # fmt: skip
    assert modes == ["full", "incremental", "incremental", "incremental", "full", "incremental", "incremental",
                     "incremental"]  # fmt: skip
    # points 0-1 hold the first digest form; 2 keeps it for what it reused, BLAKE3 for what it read
    last: set[str] = set()
    for i, (pid, _, _) in enumerate(points[:5]):
        volume_section = hot.get_manifest(desktop, pid)["volume"]
        forms = {base.digest_form(o["digest"]) for o in volume_section["objects"]}
        capture = volume_section["capture"]
        if i < 2:
            assert forms == {base.BLAKE2B}, i
        elif i == 2:
            want = {base.BLAKE2B} if capture["reused_objects"] else set()
            assert forms == want | ({base.BLAKE3} if capture["read_objects"] else set()), (i, capture)
        elif i == 3:  # nothing changed: point 2's entries as they were
            assert capture["read_objects"] == 0 and forms == last, (i, capture)
        else:
            assert forms == {base.BLAKE3}, i
        say(f"point {i}: digest forms {sorted(forms)}")
        last = forms

    time.sleep(1.5)
    tier = drsvc_env.cli("--json", "tier")
    assert tier.code == 0, (tier.stdout, tier.stderr)
    services = drsvc_env.services()
    scratch = f"{desktop}-r{uuid.uuid4().hex[:4]}"
    scratch_url = f"rados://desktops/{scratch}"
    volume = services.volume(f"rados://desktops/{desktop}")
    try:
        for i, (pid, oracle, _) in enumerate(points):
            manifest = services.hot.get_manifest(desktop, pid)
            write_from_stream(services, services.hot, manifest, scratch_url)
            same(read_raw(ioctx, scratch), oracle, f"point {i} from the hot store's chunks")
            write_from_stream(services, services.cold, services.cold.get_manifest(desktop, pid), scratch_url)
            same(read_raw(ioctx, scratch), oracle, f"point {i} from the cold store")
            volume.clone_from_snapshot(manifest["volume"]["pool_snapshot"], scratch)
            same(read_raw(ioctx, scratch), oracle, f"point {i} from its pool snapshot")
            # drsvc's own digests agree with the data too (what restore verifies), each in its own form
            recorded = {o["name"]: o["digest"] for o in manifest["volume"]["objects"]}
            assert services.volume(scratch_url).digests_now(like=recorded) == recorded, f"point {i}"
    finally:
        services.volume(scratch_url).purge()

    # and through drsvc restore itself, as a clone: an incremental point from each tier (point 3 often mixes
    # both digest forms, point 1 holds the first form only)
    runtime = services.runtime
    for i, tier in ((3, "hot"), (1, "cold"), (len(points) - 1, "cold")):
        pid, oracle, _ = points[i]
        clone = f"{desktop}-{tier}{uuid.uuid4().hex[:4]}"
        restored = drsvc_env.cli(
            "--json", "restore", desktop, "--point", pid, "--tier", tier, "--as", clone, "--verify"
        )
        try:
            assert restored.code == 0, (restored.stdout, restored.stderr)
            same(read_raw(ioctx, clone), oracle, f"point {i} restored by drsvc restore --tier {tier}")
        finally:
            with contextlib.suppress(NotFound):  # the restore may have failed before creating it
                runtime.remove(clone)
            services.volume(f"rados://desktops/{clone}").purge()
