"""Per-tenant data keys (envelope encryption), the fleet scope, rotation, and the key file's rules."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture)

from drsvc import clock
from drsvc.chunks import ChunkStore, StreamRef, chunk_key
from drsvc.chunks.keyring import pointer_key, record_key, tenant_tag
from drsvc.chunks.layout import object_aad
from drsvc.crypto import SEAL_TAGGED, Keys, generate_key_file, load_key, sealed_key_id
from drsvc.errors import IntegrityError, InvalidInput
from drsvc.kms import FileKeyProvider
from drsvc.storage.file import FileStore
from drsvc.tiering import TierJob
from drsvc.verify import VerifyJob

MiB = 1024 * 1024
MASTER = Keys(bytes(range(32)))


def data(n: int, seed: int) -> bytes:
    return b"".join(b"%d line %d of some desktop file\n" % (seed, i) for i in range(n // 30))[:n]


@pytest.fixture
def cs(tmp_path: Path) -> ChunkStore:
    return ChunkStore.init(FileStore(tmp_path / "store", fsync=False), MASTER)


def fresh(cs: ChunkStore, **options: Any) -> ChunkStore:
    return ChunkStore.open(FileStore(Path(cs.store.url[len("file://") :]), fsync=False), MASTER, **options)


def test_one_tenants_chunks_cannot_be_decrypted_with_another_tenants_key(cs: ChunkStore) -> None:
    acme, globex = cs.for_tenant("acme"), cs.for_tenant("globex")
    assert acme.write_keys.tagged and globex.write_keys.tagged
    assert acme.write_keys.fingerprint != globex.write_keys.fingerprint != MASTER.fingerprint
    ref = acme.write_bytes(data(1 * MiB, 1))
    assert ref.key_id == acme.write_keys.fingerprint
    for cid, _ in ref.chunks:
        key = chunk_key(cid)
        blob = cs.store.get(key)
        assert blob[0] == SEAL_TAGGED and sealed_key_id(blob) == acme.write_keys.fingerprint
        with pytest.raises(IntegrityError, match="sealed with key"):
            globex.write_keys.open_(blob, object_aad(key))  # refused by name ...
        forged = bytes([SEAL_TAGGED]) + bytes.fromhex(globex.write_keys.fingerprint) + blob[9:]
        with pytest.raises(IntegrityError, match="authentication failed"):
            globex.write_keys.open_(forged, object_aad(key))  # ... and by AES-GCM when the header lies
        with pytest.raises(IntegrityError):
            MASTER.open_(blob, object_aad(key))  # nor with the fleet (master) key itself
    assert acme.read_bytes(ref) == data(1 * MiB, 1)


def test_dedup_stays_inside_a_tenant(cs: ChunkStore) -> None:
    same = data(2 * MiB, 7)
    a1 = cs.for_tenant("acme").write_bytes(same)
    a2 = cs.for_tenant("acme").write_bytes(same)
    b = cs.for_tenant("globex").write_bytes(same)
    assert a2.stats.chunks_new == 0  # the same tenant: stored once
    assert b.stats.chunks_new == len(b.chunks)  # another tenant: its own chunks ...
    assert not {c for c, _ in a1.chunks} & {c for c, _ in b.chunks}  # ... under ids that differ
    assert cs.read_bytes(b) == cs.read_bytes(a1) == same


def test_fleet_scope_is_the_single_key_of_before(tmp_path: Path) -> None:
    cs = ChunkStore.init(FileStore(tmp_path / "s", fsync=False), MASTER, scope="fleet")
    a, b = cs.for_tenant("acme"), cs.for_tenant("globex")
    assert a.write_keys is b.write_keys is MASTER
    ra, rb = a.write_bytes(data(MiB, 3)), b.write_bytes(data(MiB, 3))
    assert ra.chunks == rb.chunks and rb.stats.chunks_new == 0 and ra.key_id is None
    assert "data_key" not in ra.to_dict()  # manifests as before per-tenant keys
    assert cs.store.get(chunk_key(ra.chunks[0][0]))[0] == 1
    assert list(cs.store.list("keys/")) == []


def test_manifests_name_their_key_and_readers_find_it(cs: ChunkStore) -> None:
    acme = cs.for_tenant("acme")
    ref = acme.write_bytes(data(MiB, 2))
    acme.put_manifest("desk-a", "p1", {"volume": {"stream": ref.to_dict()}})
    other = fresh(cs)  # a new process: knows no tenant, finds the key from the manifest
    doc = other.get_manifest("desk-a", "p1")
    assert other.read_bytes(StreamRef.from_dict(doc["volume"]["stream"])) == data(MiB, 2)
    report = other.verify_chunks(
        [c for c, _ in ref.chunks], read_data=True, key_of={c: ref.key_id for c, _ in ref.chunks}
    )
    assert report.ok


def test_a_tenants_manifest_cannot_pull_in_another_tenants_chunks(cs: ChunkStore) -> None:
    """Whoever holds acme's key (a compromised agent) cannot make drsvc read globex's data for acme."""
    acme, globex = cs.for_tenant("acme"), cs.for_tenant("globex")
    theirs = globex.write_bytes(data(MiB, 9))
    fleet_ref = cs.write_bytes(data(MiB, 10))  # a point from before per-tenant keys
    for stolen in (theirs, fleet_ref):
        with pytest.raises(IntegrityError, match="names data key"):
            acme.put_manifest("desk-a", "evil", {"volume": {"stream": stolen.to_dict()}})
        # sealed by hand with acme's key, bypassing the writer's check: the reader refuses it
        key = "manifests/desk-a/evil"
        raw = json.dumps({"volume": {"stream": stolen.to_dict()}}).encode()
        cs.store.put(key, acme.codec.seal_doc(key, raw))
        with pytest.raises(IntegrityError, match="names data key"):
            cs.get_manifest("desk-a", "evil")
    # a reference relabelled with acme's key id: its chunks do not open with acme's key
    relabelled = StreamRef(theirs.chunks, theirs.size, theirs.hash, key_id=acme.write_keys.fingerprint)
    with pytest.raises(IntegrityError, match="sealed with key"):
        cs.read_bytes(relabelled)
    report = cs.verify_chunks(
        [c for c, _ in theirs.chunks], read_data=True, key_of={c: acme.write_keys.fingerprint for c, _ in theirs.chunks}
    )
    assert sorted(report.corrupt) == sorted({c for c, _ in theirs.chunks})


def test_rotation_new_points_use_the_new_key_old_ones_stay_readable(cs: ChunkStore) -> None:
    before = cs.for_tenant("acme")
    old = before.write_bytes(data(MiB, 4))
    record = cs.keyring.rotate("acme")
    after = cs.for_tenant("acme")
    new = after.write_bytes(data(MiB, 4))
    assert old.key_id != new.key_id == record.key_id
    assert new.stats.chunks_new == len(new.chunks)  # a new key: its own ids (dedup restarts once)
    again = fresh(cs)
    assert again.read_bytes(old) == again.read_bytes(new) == data(MiB, 4)
    assert again.for_tenant("acme").write_keys.fingerprint == record.key_id
    records = [r for r in again.keyring.records() if r.tenant == "acme"]
    assert len(records) == 2 and [again.keyring.is_current(r) for r in records] == [False, True]


def test_key_records_are_wrapped_bound_to_their_place_and_their_kek(cs: ChunkStore, tmp_path: Path) -> None:
    record = cs.keyring.rotate("acme")
    raw = cs.store.get(record.object_key)
    doc = json.loads(raw)
    assert record.keys.master.hex() not in raw.decode() and "acme" not in raw.decode()
    assert record.object_key == record_key(record.key_id) == f"keys/{record.key_id}"
    pointer = cs.store.get(pointer_key("acme"))
    assert pointer_key("acme") == f"keys/current/{tenant_tag('acme')}" and b"acme" not in pointer
    other = cs.keyring.rotate("globex")
    # a record at another key id's place: refused
    other_raw = cs.store.get(other.object_key)
    cs.store.put(other.object_key, raw)
    with pytest.raises(IntegrityError, match="does not authenticate"):
        fresh(cs).keyring.keys(other.key_id)
    cs.store.put(other.object_key, other_raw)
    # tampered
    cs.store.put(record.object_key, json.dumps({**doc, "wrapped": "00" + doc["wrapped"][2:]}).encode())
    with pytest.raises(IntegrityError, match="does not authenticate"):
        fresh(cs).keyring.keys(record.key_id)
    cs.store.put(record.object_key, raw)
    # one tenant's pointer put in place of another's: refused, not followed
    cs.store.put(pointer_key("globex"), pointer)
    with pytest.raises(IntegrityError, match="pointer does not authenticate"):
        fresh(cs).for_tenant("globex")
    # another installation's key (a store copied elsewhere, opened with the wrong master key)
    stranger = FileKeyProvider(Keys.generate())
    with pytest.raises(IntegrityError, match="wrapped by key"):
        ChunkStore(cs.store, stranger, cs.params).keyring.keys(record.key_id)


def test_an_existing_fleet_store_moves_to_tenant_keys_without_a_step(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s", fsync=False)
    legacy = ChunkStore.init(store, MASTER, scope="fleet")
    old = legacy.write_bytes(data(MiB, 5))
    legacy.put_manifest("desk-a", "old", {"volume": {"stream": old.to_dict()}})
    now = ChunkStore.open(store, MASTER)  # the default scope: tenant
    new = now.for_tenant("acme").write_bytes(data(MiB, 5))
    now.for_tenant("acme").put_manifest("desk-a", "new", {"volume": {"stream": new.to_dict()}})
    for pid, want in (("old", None), ("new", new.key_id)):
        ref = StreamRef.from_dict(now.get_manifest("desk-a", pid)["volume"]["stream"])
        assert ref.key_id == want and now.read_bytes(ref) == data(MiB, 5)


@pytest.mark.usefixtures("aws")
def test_tiering_carries_each_tenants_key_and_keeps_packs_per_key(tmp_path: Path) -> None:
    kit = ColdKit(tmp_path)
    kit.policy("std", ["a1", "b1", "f1"])
    when = clock.now() - timedelta(hours=3)
    image = data(300_000, 99)  # the same base image in both tenants
    pa = kit.point("a1", when, data(2 * MiB, 1), image=image, tenant="acme")
    pb = kit.point("b1", when, data(2 * MiB, 1), image=image, tenant="globex")
    pf = kit.point("f1", when, data(2 * MiB, 1), image=image)  # fleet key (before per-tenant keys)
    report = TierJob(kit.services, None).run(now=clock.now())
    assert report.exit_code == 0, report.document()
    cold = kit.fresh_services().cold
    tenants = sorted(r.tenant for r in cold.keyring.records())
    assert tenants == ["acme", "globex"]
    for index in cold.refresh_packs().values():  # a pack (frames, index) holds one key's chunks
        key_ids = {
            cold.keyring.keys_of(
                cold.store.get_range(f"packs/{index.pack_id[:2]}/{index.pack_id}", e.offset, e.length)
            ).key_id
            for e in index.entries
        }
        assert len(key_ids) == 1
    for desk, pid in (("a1", pa), ("b1", pb), ("f1", pf)):
        ref = StreamRef.from_dict(cold.get_manifest(desk, pid)["volume"]["stream"])
        assert cold.read_bytes(ref) == data(2 * MiB, 1)
    verify = VerifyJob(kit.services).run(None, read_data=True)
    assert verify.ok, verify.document()
    kit.catalog.close()


@pytest.mark.usefixtures("aws")
def test_keys_cli_lists_and_rotates(tmp_path: Path, run_cli: Any) -> None:
    kit = ColdKit(tmp_path)
    kit.point("a1", clock.now(), data(MiB, 1), tenant="acme")
    config = str(tmp_path / "drsvc.toml")
    listed = run_cli("--config", config, "--json", "keys", "list")
    assert listed.code == 0, listed.output
    rows = {r["tenant"]: r for r in listed.json()["keys"]}
    assert set(rows) == {None, "acme"} and rows["acme"]["current"] and rows["acme"]["stores"] == ["hot"]
    dry = run_cli("--config", config, "--json", "keys", "rotate", "--tenant", "acme", "--dry-run")
    assert dry.code == 0 and dry.json()["rotated"][0]["new_key_id"] is None
    done = run_cli("--config", config, "--json", "keys", "rotate")
    assert done.code == 0, done.output
    [row] = done.json()["rotated"]
    assert row["tenant"] == "acme" and row["old_key_id"] == rows["acme"]["key_id"] != row["new_key_id"]
    again = run_cli("--config", config, "keys", "list")
    assert again.code == 0 and row["new_key_id"] in again.stdout and "older" in again.stdout
    (tmp_path / "drsvc.toml").write_text(
        kit.config_text.replace('file = "drsvc.key"', 'file = "drsvc.key"\nscope = "fleet"')
    )
    fleet = run_cli("--config", config, "keys", "rotate")
    assert fleet.code == 2 and "keys.scope is fleet" in fleet.stderr
    kit.catalog.close()


# ---------------------------------------------------------------------- the key file


def test_key_file_must_be_private_regular_and_ours(tmp_path: Path) -> None:
    path = generate_key_file(tmp_path / "k")
    assert load_key(path).fingerprint
    path.chmod(0o400)
    assert load_key(path).fingerprint  # read-only is fine
    for mode in (0o640, 0o660, 0o622, 0o604):
        path.chmod(mode)
        with pytest.raises(InvalidInput, match=f"chmod 600 {path}") as e:
            load_key(path)
        assert e.value.exit_code == 2
    path.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(InvalidInput, match="is a symlink"):
        load_key(link)
    with pytest.raises(InvalidInput, match="not a regular file"):
        os.mkfifo(tmp_path / "fifo", 0o600)
        load_key(tmp_path / "fifo")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_key_file_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = generate_key_file(tmp_path / "k")
    os.chown(path, 65534, 65534)
    with pytest.raises(InvalidInput, match=f"owned by uid 65534.*chown {os.geteuid()} {path}"):
        load_key(path)
