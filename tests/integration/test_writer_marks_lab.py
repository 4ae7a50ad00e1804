"""Real RADOS: a clone restore's writer mark stays on the clone's objects and is no part of its content.

A kept clone (``restore --as``) keeps the xattr ``drsvc.restore-writer`` its restore created each
object with (no per-object removal). Kept as a desktop of its own and backed up, its point equals
the point it was restored from, object by object, and records no mark; restored in place (a pool
snapshot's rollback brings the marks back), ``--verify`` passes. The kill -9 trials of cleanup are in
``test_faults_lab.py``.
"""

from __future__ import annotations

import json
import subprocess

from drsvc.catalog import Catalog
from drsvc.volumes.base import WRITER_XATTR


def _podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True, timeout=300).stdout.strip()


def _marks(io, names: list[str]) -> set[bytes | None]:
    import rados

    out: set[bytes | None] = set()
    for name in names:
        try:
            out.add(bytes(io.get_xattr(name, WRITER_XATTR)))
        except rados.NoData:
            out.add(None)
    return out


def _keep_as_a_desktop(clone: str) -> None:
    """The operator keeps a clone as a desktop of its own: its namespace, a container without drsvc.clone-of."""
    doc = json.loads(_podman("inspect", clone))[0]
    image = doc["ImageName"]
    labels = {k: v for k, v in (doc["Config"]["Labels"] or {}).items() if k not in ("drsvc.clone-of", "drsvc.restore")}
    _podman("rm", "-f", "-t", "0", clone)
    flags = [x for k, v in labels.items() for x in ("--label", f"{k}={v}")]
    _podman("run", "-d", "--name", clone, *flags, image, "sleep", "3600")


def test_a_kept_clone_keeps_its_marks_and_backs_up_equal_to_its_point(drsvc_env, make_fleet, rados_cluster):
    [desktop] = make_fleet(1)
    assert drsvc_env.cli("backup", desktop).code == 0
    clone = f"{desktop}-kept"
    url = f"rados://desktops/{clone}"
    services = drsvc_env.services()
    io = rados_cluster.open_ioctx("desktops")
    io.set_namespace(clone)
    try:
        restored = drsvc_env.cli("--json", "restore", desktop, "--as", clone, "--verify")
        assert restored.code in (0, 5), restored.output
        assert "objects match the manifest's digests" in restored.json()["checks"]["data"]
        catalog = Catalog.open(drsvc_env.root / "catalog.db")
        try:
            [row] = catalog.query("SELECT state, detail FROM intents WHERE kind = 'clone-volume' AND target = ?", [url])
        finally:
            catalog.close()
        detail = json.loads(row["detail"])
        assert row["state"] == "kept" and "written" not in detail, row
        names = sorted(o.key for o in io.list_objects())
        assert names and _marks(io, names) == {detail["mark"].encode()}, "an object of the kept clone lost its mark"

        _keep_as_a_desktop(clone)
        backup = drsvc_env.cli("--json", "backup", clone)
        assert backup.code == 0, backup.output
        [result] = backup.json()["results"]
        assert result["status"] == "complete", result
        source = services.hot.get_manifest(desktop, restored.json()["point_id"])["volume"]["objects"]
        kept = services.hot.get_manifest(clone, result["point_id"])["volume"]["objects"]
        assert not [o["name"] for o in kept if WRITER_XATTR in o["xattrs"]], "the mark entered the clone's point"
        assert {o["name"]: o["digest"] for o in kept} == {o["name"]: o["digest"] for o in source}
        assert _marks(io, names) == {detail["mark"].encode()}, "the backup changed the clone's objects"

        # in place from its own point: the pool snapshot's rollback brings the marks back; --verify ignores them
        again = drsvc_env.cli("--json", "restore", clone, "--force", "--verify")
        assert again.code in (0, 5), again.output
        assert "objects match the manifest's digests" in again.json()["checks"]["data"]
        assert _marks(io, names) == {detail["mark"].encode()}
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", clone], capture_output=True, timeout=120)
        services.volume(url).purge()
        io.close()
