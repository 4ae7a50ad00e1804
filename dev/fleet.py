#!/usr/bin/python3
"""Deterministic persistent data for the lab's demo desktops (one RADOS namespace each).

Run with Debian's python (/usr/bin/python3 has python3-rados); stdlib + rados only.

    python3 dev/fleet.py write  --pool desktops --desktop desk-001 [--desktop ...] --seed 42 --data-mib 8
    python3 dev/fleet.py verify --pool desktops --desktop desk-001 --seed 42 --data-mib 8 [--strict]
    python3 dev/fleet.py purge  --pool desktops --desktop desk-001 | --all-fleet
    python3 dev/fleet.py plan   --desktop desk-001 --seed 42 --data-mib 8      (no cluster needed)

The content of a desktop's namespace is a pure function of (seed, desktop id, data_mib):
  * base image  (~40 % of the bytes): 64 KiB-1 MiB "libraries", identical across all desktops of a
    seed (dedup across desktops), half random / half repetitive blocks (compressible ~50 %);
  * media       (~30 %): 2-4 MiB incompressible objects, with xattrs;
  * small files (the rest): 1-16 KiB documents (text, some with xattrs), configs (with omap keys)
    and logs;
  * meta/profile: an empty object with omap keys and xattrs.
Tests and benchmarks import `expected_objects()` / `verify_namespace()` to check content byte for byte.
Objects the fleet does not own in the namespace: `counter` (the desktop workload's) and the
marker `.drsvc-fleet` (written last: which data set is complete).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import time
from collections.abc import Iterable

MiB = 1 << 20
KiB = 1 << 10
VERSION = "2"  # bump whenever expected_objects() changes
MARKER = ".drsvc-fleet"
IGNORED = frozenset({"counter", MARKER})
FLEET_NS = re.compile(r"^desk-\d+$")

# (data, xattrs, omap)
Obj = tuple[bytes, dict[str, bytes], dict[str, bytes]]

_WORDS = (  # noqa: SIM905
    "the of and to in is for on that with as by this at from are be or an it not which "
    "desktop backup report invoice meeting quarterly budget project roadmap customer revenue "
    "draft final review approved pending schedule team office network printer password "
    "update release ticket incident restore snapshot policy tenant volume archive"
).split()


def _rng(*parts: object) -> random.Random:
    # random.Random(str) hashes the string with SHA-512: stable across runs and Python versions
    return random.Random(":".join(str(p) for p in parts))


def _text(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        line = " ".join(rng.choices(_WORDS, k=rng.randint(4, 14)))
        out += line.capitalize().encode() + b".\n"
    return bytes(out[:size])


def _semi(rng: random.Random, size: int) -> bytes:
    """Half random, half repetitive 4 KiB blocks (a binary that compresses ~2:1)."""
    pattern = rng.randbytes(256) * 16
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(4096) if rng.random() < 0.5 else pattern
    return bytes(out[:size])


def _base_set(seed: int, budget: int) -> dict[str, Obj]:
    objs: dict[str, Obj] = {}
    used, k = 0, 0
    while True:
        size = _rng("base-size", seed, k).randint(64 * KiB, 1 * MiB)
        if objs and used + size > budget:
            break
        name = f"base/usr/lib/lib{k:03d}.so"
        xattrs = {"user.package": f"libdesk{k % 7}".encode()} if k % 4 == 0 else {}
        objs[name] = (_semi(_rng("base", seed, k), size), xattrs, {})
        used += size
        k += 1
    return objs


def expected_objects(seed: int, desktop: str, data_mib: float = 8) -> dict[str, Obj]:
    """name -> (data, xattrs, omap) of one desktop's namespace (marker and `counter` excluded)."""
    total = int(data_mib * MiB)
    objs = _base_set(seed, int(total * 0.4))
    used = sum(len(d) for d, _, _ in objs.values())
    for k in range(max(0, round(total * 0.3 / (3 * MiB)))):
        r = _rng("media", seed, desktop, k)
        size = r.randint(2 * MiB, 4 * MiB)
        objs[f"home/media/clip-{k:03d}.mp4"] = (
            r.randbytes(size),
            {"user.mime": b"video/mp4", "user.owner": desktop.encode()},
            {},
        )
        used += size
    k = 0
    while used < total or k < 3:
        r = _rng("small", seed, desktop, k)
        size = r.randint(1 * KiB, 16 * KiB)
        kind = k % 5
        if kind in (0, 1, 2):
            name = f"home/docs/doc-{k:04d}.txt"
            xattrs = {"user.owner": desktop.encode(), "user.mime": b"text/plain"} if k % 3 == 0 else {}
            objs[name] = (_text(r, size), xattrs, {})
        elif kind == 3:
            name = f"home/.config/app-{k:04d}.conf"
            omap = {
                f"setting.{j:02d}": f"{r.choice(_WORDS)}={r.randint(0, 9999)}".encode() for j in range(r.randint(3, 8))
            }
            objs[name] = (_text(r, size // 4), {}, omap)
        else:
            name = f"var/log/session-{k:04d}.log"
            objs[name] = (_text(r, size), {}, {})
        used += len(objs[name][0])
        k += 1
    idx = desktop.rsplit("-", 1)[-1]
    tenant = "globex" if idx.isdigit() and int(idx) % 2 == 0 else "acme"
    objs["meta/profile"] = (
        b"",
        {"user.desktop": desktop.encode(), "user.seed": str(seed).encode()},
        {"desktop": desktop.encode(), "tenant": tenant.encode(), "theme": b"dark", "locale": b"en_US.UTF-8"},
    )
    return objs


def _digest(obj: Obj) -> str:
    data, xattrs, omap = obj
    h = hashlib.sha256(data)
    for k in sorted(xattrs):
        h.update(b"\0x" + k.encode() + b"=" + xattrs[k])
    for k in sorted(omap):
        h.update(b"\0o" + k.encode() + b"=" + omap[k])
    return h.hexdigest()


def expected_digests(seed: int, desktop: str, data_mib: float = 8) -> dict[str, str]:
    """name -> sha256 over data, xattrs and omap (same digest as `read_digests`)."""
    return {n: _digest(o) for n, o in expected_objects(seed, desktop, data_mib).items()}


def marker_value(seed: int, data_mib: float) -> bytes:
    return f"v{VERSION} seed={seed} data_mib={data_mib:g}".encode()


# ---------------------------------------------------------------- RADOS side
def _wait_all(comps: list, ok: tuple[int, ...] = ()) -> None:
    """Wait for every completion (and its callback, if any), then raise the first failure.

    Always wait_for_complete_and_cb, never wait_for_complete: python3-rados gives librados a
    borrowed pointer to a completion that has a callback, and wait_for_complete returns before the
    callback ran; a completion dropped then can be freed under librados' finisher thread (segfault).
    Every completion is waited even after a failure, so none is left in flight.
    """
    failed = 0
    for c in comps:
        c.wait_for_complete_and_cb()
        rv = c.get_return_value()
        if rv < 0 and rv not in ok and not failed:
            failed = rv
    comps.clear()
    if failed:
        raise OSError(-failed, f"rados aio op failed: {failed}")


def write_namespace(ioctx, seed: int, desktop: str, data_mib: float = 8, inflight: int = 32) -> int:
    """Write one desktop's data set into ioctx (namespace set here). Returns bytes written."""
    ioctx.set_namespace(desktop)
    objs = expected_objects(seed, desktop, data_mib)
    comps: list = []
    ops: list = []
    n = 0
    try:
        for name, (data, xattrs, omap) in objs.items():
            op = ioctx.create_write_op()
            ops.append(op)  # released below, once, after its completion was waited
            op.write_full(data)
            for k, v in xattrs.items():
                op.set_xattr(k, v)
            if omap:
                ioctx.set_omap(op, tuple(omap), tuple(omap.values()))
            comps.append(ioctx.operate_aio_write_op(op, name))
            n += len(data)
            if len(comps) >= inflight:
                _release_after(comps, ops)
        _release_after(comps, ops)
    finally:
        _release_after(comps, ops)  # after an error: nothing left in flight, nothing leaked
    # the namespace holds exactly this data set afterwards (an older one may have been there)
    for stale in set(list_namespace(ioctx, desktop)) - set(objs) - IGNORED:
        comps.append(ioctx.aio_remove(stale))
    _wait_all(comps, ok=(-2,))
    ioctx.write_full(MARKER, marker_value(seed, data_mib))
    return n


def has_marker(ioctx, seed: int, desktop: str, data_mib: float) -> bool:
    import rados

    ioctx.set_namespace(desktop)
    try:
        return ioctx.read(MARKER, 4096) == marker_value(seed, data_mib)
    except rados.ObjectNotFound:
        return False


def read_object(ioctx, name: str) -> Obj:
    import rados

    size, _ = ioctx.stat(name)
    data = ioctx.read(name, size + 1) if size else b""
    xattrs = {k: bytes(v) for k, v in ioctx.get_xattrs(name)}
    omap: dict[str, bytes] = {}
    after = ""
    while True:
        with rados.ReadOpCtx() as op:
            it, _ = ioctx.get_omap_vals(op, after, "", 1000)
            ioctx.operate_read_op(op, name)
            batch = [(k, bytes(v)) for k, v in it]
        omap.update(batch)
        if len(batch) < 1000:
            break
        after = batch[-1][0]
    return data, xattrs, omap


def list_namespace(ioctx, desktop: str) -> list[str]:
    ioctx.set_namespace(desktop)
    return sorted(o.key for o in ioctx.list_objects())


def read_digests(ioctx, desktop: str, names: Iterable[str] | None = None) -> dict[str, str]:
    """name -> digest of what the namespace holds now (all objects except IGNORED by default)."""
    ioctx.set_namespace(desktop)
    if names is None:
        names = [n for n in list_namespace(ioctx, desktop) if n not in IGNORED]
    return {n: _digest(read_object(ioctx, n)) for n in names}


def verify_namespace(ioctx, seed: int, desktop: str, data_mib: float = 8, strict: bool = False) -> list[str]:
    """Problems found (empty list = the namespace holds exactly the expected data)."""
    import rados

    ioctx.set_namespace(desktop)
    problems: list[str] = []
    expected = expected_objects(seed, desktop, data_mib)
    for name, (data, xattrs, omap) in expected.items():
        try:
            got = read_object(ioctx, name)
        except rados.ObjectNotFound:
            problems.append(f"{desktop}/{name}: missing")
            continue
        if got[0] != data:
            problems.append(f"{desktop}/{name}: data differs ({len(got[0])} bytes, expected {len(data)})")
        if got[1] != xattrs:
            problems.append(f"{desktop}/{name}: xattrs differ: {sorted(got[1])} vs {sorted(xattrs)}")
        if got[2] != omap:
            problems.append(f"{desktop}/{name}: omap differs: {len(got[2])} keys vs {len(omap)}")
    if strict:
        extra = set(list_namespace(ioctx, desktop)) - set(expected) - IGNORED
        problems += [f"{desktop}/{n}: unexpected object" for n in sorted(extra)]
    return problems


def purge_namespaces(ioctx, desktops: Iterable[str], all_fleet: bool = False) -> int:
    """Remove every object of the given namespaces (and of all desk-NNN ones with all_fleet)."""
    import rados

    wanted = set(desktops)
    ioctx.set_namespace(rados.LIBRADOS_ALL_NSPACES)
    victims = [
        (o.nspace, o.key)
        for o in ioctx.list_objects()
        if o.nspace in wanted or (all_fleet and FLEET_NS.match(o.nspace or ""))
    ]
    comps: list = []
    for ns, key in victims:
        ioctx.set_namespace(ns)
        comps.append(ioctx.aio_remove(key))
        if len(comps) >= 64:
            _wait_all_ignore_enoent(comps)
    _wait_all_ignore_enoent(comps)
    return len(victims)


def _wait_all_ignore_enoent(comps: list) -> None:
    _wait_all(comps, ok=(-2,))  # already gone is fine


def _release_after(comps: list, ops: list) -> None:
    """Wait for the write ops' completions, then release each op exactly once (a second release
    of a WriteOp is a double free in the binding: it keeps the pointer)."""
    try:
        _wait_all(comps)
    finally:
        while ops:
            ops.pop().release()


# ---------------------------------------------------------------- CLI
def _connect(conf: str | None):
    import rados

    cluster = rados.Rados(conffile=conf or "")
    cluster.connect(timeout=15)
    return cluster


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["write", "verify", "purge", "plan"])
    ap.add_argument("--pool", default="desktops")
    ap.add_argument("--desktop", action="append", default=[], help="repeatable")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data-mib", type=float, default=8)
    ap.add_argument("--conf", help="ceph.conf (default: $CEPH_CONF / librados search path)")
    ap.add_argument("--if-missing", action="store_true", help="write: skip namespaces already holding this data set")
    ap.add_argument("--strict", action="store_true", help="verify: also fail on unexpected objects")
    ap.add_argument("--all-fleet", action="store_true", help="purge: also every desk-NNN namespace")
    a = ap.parse_args(argv)

    if a.action == "plan":
        for d in a.desktop:
            objs = expected_objects(a.seed, d, a.data_mib)
            print(f"{d}: {len(objs)} objects, {sum(len(o[0]) for o in objs.values())} bytes")
        return 0
    if not a.desktop and not (a.action == "purge" and a.all_fleet):
        ap.error("--desktop is required")
    cluster = _connect(a.conf)
    try:
        ioctx = cluster.open_ioctx(a.pool)
        t = time.monotonic()
        if a.action == "write":
            total = 0
            for d in a.desktop:
                if a.if_missing and has_marker(ioctx, a.seed, d, a.data_mib):
                    print(f"{d}: data set present, kept")
                    continue
                n = write_namespace(ioctx, a.seed, d, a.data_mib)
                total += n
                print(f"{d}: wrote {n} bytes")
            print(f"wrote {total / MiB:.1f} MiB in {time.monotonic() - t:.2f} s")
            return 0
        if a.action == "verify":
            bad = 0
            for d in a.desktop:
                problems = verify_namespace(ioctx, a.seed, d, a.data_mib, strict=a.strict)
                for p in problems[:20]:
                    print(p)
                print(f"{d}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
                bad += bool(problems)
            return 1 if bad else 0
        n = purge_namespaces(ioctx, a.desktop, a.all_fleet)
        print(f"purged {n} objects in {time.monotonic() - t:.2f} s")
        return 0
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
