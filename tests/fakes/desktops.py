"""FAKES of the container runtime and volume protocols: a desktop fleet kept in a directory.

Named as fakes: nothing here is drsvc's real behaviour. They let the real jobs (backup, restore,
drill, tier, prune, the CLI) run where no Podman, CRIU or Ceph can (a contributor who is not
root, the contract suite, unit tests of restore and drill), and they let a test force what the
lab cannot do on demand: a checkpoint that fails, a restore that takes longer than the target, a
clone that dies, a probe that never answers, a volume that cannot be read.

* ``fake://NAME`` (``FakeRuntime``): containers are JSON files. ``checkpoint`` plays the CRIU
  freeze hook's side of the rendezvous protocol (``drsvc/runtimes/freeze.py``) when drsvc made a
  rendezvous directory for the container, as the real hook does; its archive is the container's
  record and "memory" (a dict the test sets), so a restore proves the memory came back.
* ``fakevol://POOL/NAMESPACE`` (``FakeVolume``) and ``fakevol://POOL`` (``FakePoolSnapshots``):
  objects (data, xattrs, omap) as files; a pool snapshot copies the pool's namespaces.
* Knobs (``FakeWorld.knobs``) are per desktop, in the world directory, so a drsvc process started
  by a test (``tests/fakes/drsvc_cli.py``) sees them too.

The world is found through ``register(root)`` (in-process) or ``$DRSVC_FAKE_WORLD`` (children).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from drsvc import faults, runtimes, volumes
from drsvc.errors import BackendError, DrsvcError, InvalidInput, NotFound
from drsvc.runtimes.base import LABEL_CLONE_OF, LABEL_DESKTOP, LABEL_TENANT, LABEL_VOLUME, DesktopRef, Isolation
from drsvc.volumes.base import WRITER_XATTR, ObjectStream, SnapshotInfo, VolumeObject, digest_streams

WORLD_ENV = "DRSVC_FAKE_WORLD"
RUNTIME_SCHEME = "fake"
VOLUME_SCHEME = "fakevol"
DEFAULT_FREEZE_ROOT = "/run/drsvc/freeze"

_worlds: dict[str, Path] = {}  # "runtime:NAME" / "pool:POOL" -> world root (in-process)
# how the fake runtime "takes time" (restore_seconds): a real sleep in a child process; a test
# running drsvc in-process may advance a virtual clock instead (deployment.VirtualTime)
delay: Callable[[float], None] = time.sleep
_lock = threading.Lock()  # one process's threads; processes rely on atomic renames


def register(root: str | os.PathLike[str], *, runtime: str = "fleet", pool: str = "desktops") -> FakeWorld:
    """Make ``fake://RUNTIME`` and ``fakevol://POOL/…`` open in the world at ``root`` (created if needed).

    Several worlds may be registered at once under different runtime and pool names.
    """
    world = FakeWorld(root, pool=pool)
    _worlds[f"runtime:{runtime}"] = world.root
    _worlds[f"pool:{pool}"] = world.root
    runtimes.register_runtime(RUNTIME_SCHEME, runtime_from_url)
    volumes.register_volume_scheme(VOLUME_SCHEME, volume_from_url)
    return world


def unregister(root: str | os.PathLike[str] | None = None) -> None:
    """Forget the world at ``root`` (every world when None); the schemes go with the last one."""
    for key in [k for k, v in _worlds.items() if root is None or v == Path(root)]:
        del _worlds[key]
    if not _worlds:
        runtimes._REGISTRY.unregister(RUNTIME_SCHEME)
        volumes._REGISTRY.unregister(VOLUME_SCHEME)


def _world(key: str) -> FakeWorld:
    root = _worlds.get(key) or (Path(os.environ[WORLD_ENV]) if os.environ.get(WORLD_ENV) else None)
    if root is None:
        raise InvalidInput(f"no fake world for {key}: tests.fakes.desktops.register(root) first")
    return FakeWorld(root)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _qname(name: str) -> str:
    return urllib.parse.quote(name, safe="") + ".json"


def _unq(filename: str) -> str:
    return urllib.parse.unquote(filename.removesuffix(".json"))


# ---------------------------------------------------------------------- the world
class FakeWorld:
    """The directory holding a fake fleet: containers, images, pools, knobs."""

    def __init__(self, root: str | os.PathLike[str], *, pool: str = "desktops") -> None:
        self.root = Path(root).absolute()
        self.pool = pool
        for sub in ("containers", "images", "pools"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ the host
    @property
    def hook_installed(self) -> bool:
        """Whether this fake host has the CRIU freeze hook (default yes; the fake runtime plays it)."""
        return not (self.root / "no-freeze-hook").exists()

    @hook_installed.setter
    def hook_installed(self, value: bool) -> None:
        flag = self.root / "no-freeze-hook"
        if value:
            flag.unlink(missing_ok=True)
        else:
            flag.touch()

    # ------------------------------------------------------------ knobs
    @property
    def _knobs_file(self) -> Path:
        return self.root / "knobs.json"

    def knobs(self, desktop: str) -> dict[str, Any]:
        """The knobs of one desktop (its clones and restores follow them too)."""
        try:
            all_knobs = json.loads(self._knobs_file.read_text())
        except FileNotFoundError:
            return {}
        return dict(all_knobs.get(desktop, {}))

    def set_knobs(self, desktop: str, **knobs: Any) -> None:
        """Set knobs; a value of None removes one. Known knobs:

        ``checkpoint_error`` (str): checkpoint raises BackendError with it;
        ``archive_seconds`` (float): each read of its checkpoint archive takes this long (a desktop
        whose memory is huge);
        ``hook`` ("freeze" default, "silent": never reports frozen, "early": lets go before the
        release); ``restore_error`` (str); ``restore_seconds`` (float): restore takes this long;
        ``dies_after_restore`` (bool): the restored container is exited at once;
        ``not_from_checkpoint`` (bool): restored without restored_at (a fresh start);
        ``tcp_ports`` (list of int, default [5900]); ``exec_exit`` (int, default 0);
        ``read_error`` (str): reading its volume at a snapshot raises BackendError;
        ``read_bug`` (str): reading its volume at a snapshot raises TypeError (a drsvc bug the
        desktop's own data sets off, as an empty omap value once did);
        ``read_seconds`` (float): reading each of its objects at a snapshot takes this long (a
        namespace its processes made slow to read: huge objects, a million of them);
        ``remove_error`` (str): removing its clone raises BackendError;
        ``memory_current`` (int) and ``checkpoint_dir`` (str): what ``checkpoint_space`` reports (its
        memory in bytes, where its checkpoint would be written); unset: the runtime cannot tell.
        """
        with _lock:
            try:
                all_knobs = json.loads(self._knobs_file.read_text())
            except FileNotFoundError:
                all_knobs = {}
            mine = all_knobs.setdefault(desktop, {})
            for k, v in knobs.items():
                if v is None:
                    mine.pop(k, None)
                else:
                    mine[k] = v
            _atomic_write(self._knobs_file, json.dumps(all_knobs, indent=1).encode())

    # ------------------------------------------------------------ containers
    def _cfile(self, name: str) -> Path:
        return self.root / "containers" / f"{name}.json"

    def containers(self) -> list[dict[str, Any]]:
        out = []
        for f in sorted((self.root / "containers").glob("*.json")):
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                out.append(json.loads(f.read_text()))
        return out

    def container(self, name_or_id: str) -> dict[str, Any]:
        f = self._cfile(name_or_id)
        if f.exists():
            return dict(json.loads(f.read_text()))
        for c in self.containers():
            if c["id"] == name_or_id:
                return c
        raise NotFound(f"no such container: {name_or_id}")

    def save_container(self, record: dict[str, Any]) -> None:
        _atomic_write(self._cfile(record["name"]), json.dumps(record, indent=1).encode())

    def remove_container(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._cfile(name).unlink()

    def add_desktop(
        self,
        name: str,
        objects: dict[str, bytes | tuple[bytes, dict[str, bytes], dict[str, bytes]]] | None = None,
        *,
        pool: str | None = None,
        tenant: str = "acme",
        labels: dict[str, str] | None = None,
        image: str = "localhost/fake-desk:1",
        memory: dict[str, Any] | None = None,
        node: str | None = None,
        state: str = "running",
    ) -> dict[str, Any]:
        """A running desktop container labelled for drsvc, with its volume's objects written."""
        pool = pool or self.pool
        volume = f"{VOLUME_SCHEME}://{pool}/{name}"
        all_labels = {LABEL_DESKTOP: name, LABEL_VOLUME: volume, LABEL_TENANT: tenant, **(labels or {})}
        record = {
            "name": name,
            "id": secrets.token_hex(32),
            "labels": all_labels,
            "image": image,
            "image_id": self.ensure_image(image),
            "state": state,
            "restored_at": None,
            "network": "bridge",
            "node": node,
            "memory": memory if memory is not None else {"counter": 0},
        }
        self.save_container(record)
        if objects is not None:
            self.write_volume(pool, name, objects)
        return record

    def set_memory(self, name: str, **memory: Any) -> None:
        record = self.container(name)
        record["memory"] = {**record["memory"], **memory}
        self.save_container(record)

    # ------------------------------------------------------------ images
    def ensure_image(self, image: str, content: bytes | None = None) -> str:
        """Store an image (content: given, else made from its name); return its id, sha256 of the content."""
        import hashlib

        if content is None:
            content = hashlib.sha512(image.encode()).digest() * 64
        image_id = "sha256:" + hashlib.sha256(content).hexdigest()
        key = image_id.removeprefix("sha256:")
        if not (self.root / "images" / f"{key}.tar").exists():
            _atomic_write(self.root / "images" / f"{key}.tar", content)
            meta = {"image": image, "image_id": image_id}
            _atomic_write(self.root / "images" / f"{key}.json", json.dumps(meta).encode())
        return image_id

    def images(self) -> list[dict[str, str]]:
        return [json.loads(f.read_text()) for f in sorted((self.root / "images").glob("*.json"))]

    def drop_image(self, image_id: str) -> None:
        key = image_id.removeprefix("sha256:")
        for suffix in (".tar", ".json"):
            (self.root / "images" / f"{key}{suffix}").unlink(missing_ok=True)

    # ------------------------------------------------------------ raw checkpoint archives
    def set_archive(self, name: str, data: bytes) -> None:
        """Make ``name``'s checkpoints a tar holding these bytes as its memory image (not a restorable
        fake archive: store-level tests; a tar because drsvc refuses a checkpoint that is not one)."""
        path = self.root / "archives" / name
        _atomic_write(path, _tar_of({"pages-1.img": data}))
        record = self.container(name)
        record["archive"] = str(path)
        self.save_container(record)

    # ------------------------------------------------------------ volumes
    def live(self, pool: str, namespace: str) -> Path:
        return self.root / "pools" / pool / "live" / namespace

    def write_volume(
        self, pool: str, namespace: str, objects: dict[str, bytes | tuple[bytes, dict[str, bytes], dict[str, bytes]]]
    ) -> None:
        """Make the live namespace hold exactly ``objects`` (name -> data or (data, xattrs, omap))."""
        d = self.live(pool, namespace)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for name, value in objects.items():
            data, xattrs, omap = value if isinstance(value, tuple) else (value, {}, {})
            _write_object(d, name, data, xattrs, omap)

    def tamper_snapshot(self, pool: str, namespace: str, name: str, data: bytes) -> None:
        """Change one object in every pool snapshot holding it (storage rot under drsvc's feet)."""
        for d in (self.root / "pools" / pool / "snaps").glob(f"*/{namespace}"):
            f = d / _qname(name)
            if f.exists():
                _, xattrs, omap = _read_object(f)
                _write_object(d, name, data, xattrs, omap)

    def read_volume(self, pool: str, namespace: str) -> dict[str, tuple[bytes, dict[str, bytes], dict[str, bytes]]]:
        """What the live namespace holds (for the test's own comparisons)."""
        d = self.live(pool, namespace)
        return {_unq(f.name): _read_object(f) for f in sorted(d.glob("*.json"))} if d.is_dir() else {}


def _data_file(meta: Path) -> Path:
    return meta.parent / (meta.name.removesuffix(".json") + ".data")


def _write_object(d: Path, name: str, data: bytes, xattrs: dict[str, bytes], omap: dict[str, bytes]) -> None:
    """An object is two files: NAME.data (its bytes) and NAME.json (size, xattrs, omap), written last."""
    meta = d / _qname(name)
    _atomic_write(_data_file(meta), data)
    doc = {
        "size": len(data),
        "xattrs": {k: v.hex() for k, v in xattrs.items()},
        "omap": {k: v.hex() for k, v in omap.items()},
    }
    _atomic_write(meta, json.dumps(doc).encode())


def _read_meta(f: Path) -> tuple[int, dict[str, bytes], dict[str, bytes]]:
    doc = json.loads(f.read_text())
    return (
        int(doc["size"]),
        {k: bytes.fromhex(v) for k, v in doc["xattrs"].items()},
        {k: bytes.fromhex(v) for k, v in doc["omap"].items()},
    )


def _read_object(f: Path) -> tuple[bytes, dict[str, bytes], dict[str, bytes]]:
    _, xattrs, omap = _read_meta(f)
    return _data_file(f).read_bytes(), xattrs, omap


def _remove_object(f: Path) -> None:
    f.unlink(missing_ok=True)
    _data_file(f).unlink(missing_ok=True)


def _link(src: str, dst: str) -> None:
    """Snapshots share files with what they copy: every write replaces a file (rename), never edits it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_object(f: Path, dest: Path) -> None:
    for src in (_data_file(f), f):
        target = dest / src.name
        target.unlink(missing_ok=True)
        _link(str(src), str(target))


# ---------------------------------------------------------------------- runtime
def runtime_from_url(url: str, **_options: Any) -> FakeRuntime:
    return FakeRuntime(url, _world(f"runtime:{url.removeprefix(RUNTIME_SCHEME + '://')}"))


class FakeRuntime:
    """FAKE container runtime (``fake://NAME``) over a ``FakeWorld``."""

    stores_images = True

    def __init__(self, url: str, world: FakeWorld) -> None:
        self._url = url
        self.world = world

    @property
    def url(self) -> str:
        return self._url

    def _ref(self, c: dict[str, Any]) -> DesktopRef:
        labels = c["labels"]
        return DesktopRef(
            desktop_id=labels.get(LABEL_DESKTOP, c["name"]),
            container=c["name"],
            container_id=c["id"],
            volume=labels.get(LABEL_VOLUME),
            tenant=labels.get(LABEL_TENANT),
            labels=dict(labels),
            image=c["image"],
            image_id=c["image_id"],
            state=c["state"],
            node=c.get("node"),
            network=c.get("network"),
            restored_at=c.get("restored_at"),
        )

    def _knobs_of(self, c: dict[str, Any]) -> dict[str, Any]:
        labels = c["labels"]
        return self.world.knobs(labels.get(LABEL_CLONE_OF) or labels.get(LABEL_DESKTOP) or c["name"])

    def list_desktops(self) -> list[DesktopRef]:
        return [self._ref(c) for c in self.world.containers() if LABEL_DESKTOP in c["labels"]]

    def inspect(self, name: str) -> DesktopRef:
        return self._ref(self.world.container(name))

    def pause(self, name: str) -> None:
        c = self.world.container(name)
        c["state"] = "paused"
        self.world.save_container(c)

    def unpause(self, name: str) -> None:
        c = self.world.container(name)
        c["state"] = "running"
        self.world.save_container(c)

    def checkpoint_space(self, name: str) -> tuple[int, str] | None:
        knobs = self._knobs_of(self.world.container(name))
        if knobs.get("memory_current") is None or not knobs.get("checkpoint_dir"):
            return None
        return int(knobs["memory_current"]), str(knobs["checkpoint_dir"])

    @contextlib.contextmanager
    def checkpoint(self, name: str, *, tcp_established: bool = True) -> Iterator[BinaryIO]:
        c = self.world.container(name)
        knobs = self._knobs_of(c)
        if knobs.get("checkpoint_error"):
            raise BackendError(f"fake checkpoint of {name} failed: {knobs['checkpoint_error']}")
        if c.get("archive"):
            body = Path(c["archive"]).read_bytes()
        else:
            archive = {"container": c, "checkpointed_at": _now_iso(), "tcp_established": tcp_established}
            body = _tar_of({"config.dump": json.dumps(archive).encode()})
        self._play_hook(c["id"], knobs.get("hook", "freeze"))
        yield _SlowReads(body, float(knobs.get("archive_seconds") or 0))

    @staticmethod
    def _play_hook(container_id: str, mode: str) -> None:
        """The CRIU freeze hook's side of drsvc's rendezvous (see drsvc-freeze-hook), faked."""
        d = Path(os.environ.get("DRSVC_FREEZE_ROOT") or DEFAULT_FREEZE_ROOT) / container_id
        if not d.is_dir():
            return  # not a checkpoint drsvc asked to hold: the real hook passes it through too

        def stamp(action: str) -> None:
            with contextlib.suppress(OSError):
                (d / action).write_text(f"{time.time():.6f}\n")

        stamp("pre-dump")
        stamp("network-lock")
        stamp("post-dump")
        if mode == "silent":
            return  # never says frozen (a hook that is not there for this container)
        try:
            limit = float((d / "timeout").read_text())
        except (OSError, ValueError):
            limit = 30.0
        with contextlib.suppress(OSError):
            (d / "frozen").touch()
        if mode == "early":
            stamp("timed-out")  # let go before drsvc said so
        else:
            deadline = time.monotonic() + limit
            while not (d / "release").exists():
                if time.monotonic() >= deadline:
                    stamp("timed-out")
                    break
                time.sleep(0.002)
        stamp("network-unlock")

    def restore(
        self,
        archive: BinaryIO,
        *,
        name: str | None = None,
        tcp_established: bool = True,
        network: str | None = None,
        size: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> DesktopRef:
        try:
            with tarfile.open(fileobj=io.BytesIO(archive.read()), mode="r:") as tar:
                config = tar.extractfile("config.dump")
                doc = json.loads(config.read() if config else b"")
            old = doc["container"]
        except (ValueError, KeyError, tarfile.TarError) as e:
            raise BackendError(f"fake restore: not a fake checkpoint archive ({e})") from e
        target = name or old["name"]
        knobs = self.world.knobs(old["labels"].get(LABEL_DESKTOP, old["name"]))
        if knobs.get("restore_seconds"):
            delay(float(knobs["restore_seconds"]))
        if knobs.get("restore_error"):
            raise BackendError(f"fake restore of {target} failed: {knobs['restore_error']}")
        with contextlib.suppress(NotFound):
            self.world.container(target)
            raise BackendError(f"fake restore: the container name {target!r} is already in use")
        if not self.image_exists(old["image_id"]):
            raise BackendError(f"fake restore: image {old['image']} ({old['image_id']}) is not present")
        record = {
            **old,
            "name": target,
            "id": secrets.token_hex(32),
            "labels": {**old["labels"], **(labels or {})},
            "state": "exited" if knobs.get("dies_after_restore") else "running",
            "restored_at": None if knobs.get("not_from_checkpoint") else _now_iso(),
            "network": network or old.get("network"),
        }
        self.world.save_container(record)
        return self._ref(record)

    def isolation(self, name: str) -> Isolation:
        """What the fake container shares: its network mode, nothing else (fakes have no mounts or namespaces)."""
        c = self.world.container(name)
        return Isolation(c.get("network"), None, [], [])

    def remove(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            c = self.world.container(name)
            if LABEL_CLONE_OF in c["labels"] and self._knobs_of(c).get("remove_error"):
                raise BackendError(f"fake remove of {name} failed: {self._knobs_of(c)['remove_error']}")
        self.world.remove_container(name)

    def exec(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str]:
        c = self.world.container(name)
        if c["state"] != "running":
            return 125, f"container {name} is {c['state']}"
        if list(argv[:1]) == ["memory"]:
            return 0, json.dumps(c["memory"])
        code = int(self._knobs_of(c).get("exec_exit", 0))
        return code, f"fake exec {' '.join(argv)} -> {code}"

    def probe_tcp(self, name: str, port: int, timeout: float = 2.0) -> bool:
        c = self.world.container(name)
        return c["state"] == "running" and port in self._knobs_of(c).get("tcp_ports", [5900])

    def _image(self, image: str) -> dict[str, str] | None:
        return next((i for i in self.world.images() if image in (i["image"], i["image_id"])), None)

    def image_exists(self, image_id: str) -> bool:
        return self._image(image_id) is not None

    @contextlib.contextmanager
    def save_image(self, image: str) -> Iterator[BinaryIO]:
        found = self._image(image)
        if found is None:
            raise NotFound(f"fake runtime: no image {image}")
        yield io.BytesIO((self.world.root / "images" / f"{found['image_id'].removeprefix('sha256:')}.tar").read_bytes())

    def load_image(self, stream: BinaryIO) -> list[str]:
        image_id = self.world.ensure_image("", stream.read())
        return [image_id]

    def health(self) -> dict[str, Any]:
        return {"runtime": "fake", "version": "0", "criu": None, "freeze_hook": True}

    def close(self) -> None:
        return None


# ---------------------------------------------------------------------- volumes
def volume_from_url(url: str, **_options: Any) -> FakeVolume:
    prefix = f"{VOLUME_SCHEME}://"
    pool, _, namespace = url.removeprefix(prefix).partition("/")
    if not url.startswith(prefix) or not pool or not namespace or "/" in namespace:
        raise InvalidInput(f"malformed fake volume URL {url!r}: expected {prefix}POOL/NAMESPACE")
    return FakeVolume(_world(f"pool:{pool}"), pool, namespace)


def snapshots_from_scope(scope: str, **_options: Any) -> FakePoolSnapshots:
    pool = scope.removeprefix(f"{VOLUME_SCHEME}://")
    if not scope.startswith(f"{VOLUME_SCHEME}://") or not pool or "/" in pool:
        raise InvalidInput(f"malformed fake snapshot scope {scope!r}")
    return FakePoolSnapshots(_world(f"pool:{pool}"), pool)


class FakePoolSnapshots:
    """FAKE pool snapshots: a snapshot is a copy of every namespace of the pool."""

    def __init__(self, world: FakeWorld, pool: str) -> None:
        self.world = world
        self.pool = pool
        self.scope = f"{VOLUME_SCHEME}://{pool}"
        self._dir = world.root / "pools" / pool

    def _index(self) -> list[dict[str, Any]]:
        try:
            return list(json.loads((self._dir / "snaps.json").read_text()))
        except FileNotFoundError:
            return []

    def snap_dir(self, name: str) -> Path:
        return self._dir / "snaps" / name

    def create(self, name: str) -> int:
        with _lock:
            index = self._index()
            if any(s["name"] == name for s in index):
                raise BackendError(f"pool snapshot {name!r} already exists in fake pool {self.pool}")
            live = self._dir / "live"
            dest = self.snap_dir(name)
            if live.is_dir():
                shutil.copytree(live, dest, copy_function=_link)
            else:
                dest.mkdir(parents=True)
            snap_id = max((s["id"] for s in index), default=0) + 1
            index.append({"name": name, "id": snap_id, "created": _now_iso()})
            _atomic_write(self._dir / "snaps.json", json.dumps(index).encode())
            return snap_id

    def remove(self, name: str) -> None:
        with _lock:
            index = [s for s in self._index() if s["name"] != name]
            shutil.rmtree(self.snap_dir(name), ignore_errors=True)
            _atomic_write(self._dir / "snaps.json", json.dumps(index).encode())

    def list(self) -> list[SnapshotInfo]:
        return [
            SnapshotInfo(s["name"], s["id"], datetime.fromisoformat(s["created"].replace("Z", "+00:00")))
            for s in self._index()
        ]


class _SlowReads(io.BytesIO):
    """An archive stream whose every read takes ``seconds`` (``delay``: virtual time in-process)."""

    def __init__(self, body: bytes, seconds: float) -> None:
        super().__init__(body)
        self.seconds = seconds

    def read(self, size: int | None = -1) -> bytes:
        if self.seconds:
            delay(self.seconds)
        return super().read(size)


class FakeVolume:
    """FAKE ``Volume``: one namespace of a fake pool."""

    def __init__(self, world: FakeWorld, pool: str, namespace: str) -> None:
        self.world = world
        self.pool = pool
        self.namespace = namespace
        self.url = f"{VOLUME_SCHEME}://{pool}/{namespace}"
        self.scope = f"{VOLUME_SCHEME}://{pool}"

    def __repr__(self) -> str:
        return f"FakeVolume({self.url!r})"

    def snapshots(self) -> FakePoolSnapshots:
        return FakePoolSnapshots(self.world, self.pool)

    def _slow(self, objects: Iterator[ObjectStream]) -> Iterator[ObjectStream]:
        seconds = float(self.world.knobs(self.namespace).get("read_seconds") or 0)
        for item in objects:
            if seconds:
                delay(seconds)
            yield item

    def _at(self, snap_name: str) -> Path:
        snaps = self.snapshots()
        if not any(s.name == snap_name for s in snaps.list()):
            raise NotFound(f"pool snapshot {snap_name!r} not found in fake pool {self.pool}")
        knobs = self.world.knobs(self.namespace)
        if knobs.get("read_error"):
            raise BackendError(f"fake read of {self.url} failed: {knobs['read_error']}")
        if knobs.get("read_bug"):
            raise TypeError(knobs["read_bug"])
        return snaps.snap_dir(snap_name) / self.namespace

    def _live(self) -> Path:
        return self.world.live(self.pool, self.namespace)

    @staticmethod
    def _objects(d: Path) -> list[VolumeObject]:
        if not d.is_dir():
            return []
        out = []
        for f in sorted(d.glob("*.json"), key=lambda p: _unq(p.name)):
            size, xattrs, omap = _read_meta(f)
            out.append(VolumeObject(_unq(f.name), size, xattrs, omap))
        return sorted(out, key=lambda o: o.name)

    @staticmethod
    def _stream(d: Path, objects: Iterable[VolumeObject]) -> Iterator[ObjectStream]:
        for obj in objects:
            f = d / _qname(obj.name)
            if not f.exists():
                raise NotFound(f"object {obj.name} not found in {d}")
            data = _read_object(f)[0]
            yield obj, iter([data[i : i + 65536] for i in range(0, len(data), 65536)] or [b""])

    def objects_at(self, snap_name: str) -> list[VolumeObject]:
        return self._objects(self._at(snap_name))

    def read_objects_at(self, snap_name: str, objects: Iterable[VolumeObject] | None = None) -> Iterator[ObjectStream]:
        d = self._at(snap_name)
        return self._slow(self._stream(d, self._objects(d) if objects is None else objects))

    def read_at(self, snap_name: str, name: str) -> Iterator[bytes]:
        f = self._at(snap_name) / _qname(name)
        if not f.exists():
            raise NotFound(f"object {name} not found in {self.url} at snapshot {snap_name}")
        return iter([_read_object(f)[0]])

    def objects_now(self) -> list[VolumeObject]:
        return self._objects(self._live())

    def read_objects(self, objects: Iterable[VolumeObject] | None = None) -> Iterator[ObjectStream]:
        d = self._live()
        return self._stream(d, self._objects(d) if objects is None else objects)

    def read(self, name: str) -> Iterator[bytes]:
        f = self._live() / _qname(name)
        if not f.exists():
            raise NotFound(f"object {name} not found in {self.url}")
        return iter([_read_object(f)[0]])

    def stat(self, name: str) -> VolumeObject | None:
        f = self._live() / _qname(name)
        if not f.exists():
            return None
        size, xattrs, omap = _read_meta(f)
        return VolumeObject(name, size, xattrs, omap)

    def digest_at(self, snap_name: str, like: Mapping[str, str] | None = None) -> dict[str, str]:
        return digest_streams(self.read_objects_at(snap_name), like)

    def digests_now(self, like: Mapping[str, str] | None = None) -> dict[str, str]:
        return digest_streams(self.read_objects(), like)

    def rollback_to(self, snap_name: str, keep: Iterable[str] | None = None) -> None:
        src = self._at(snap_name)
        wanted = set(keep) if keep is not None else {o.name for o in self._objects(src)}
        live = self._live()
        live.mkdir(parents=True, exist_ok=True)
        for f in list(live.glob("*.json")):
            if _unq(f.name) not in wanted:
                _remove_object(f)
        for name in wanted:
            f = src / _qname(name)
            if f.exists():
                _copy_object(f, live)

    def write_objects(
        self,
        items: Iterable[ObjectStream],
        *,
        exact: bool = True,
        fresh: bool = False,
        created: set[str] | None = None,
        mark: str | None = None,
        whole: bool = False,
    ) -> int:
        live = self._live()  # every object is written whole here (``whole`` is what RADOS needs)
        live.mkdir(parents=True, exist_ok=True)
        written: set[str] = set()
        for obj, chunks in items:
            faults.point("mid-restore-volume")  # where RADOS's writer marks it: before each object
            data = b"".join(chunks)
            if len(data) != obj.size:
                raise BackendError(f"write {self.url}/{obj.name}: {len(data)} bytes, expected {obj.size}")
            if fresh and (live / _qname(obj.name)).exists():
                raise DrsvcError(f"write {self.url}/{obj.name}: the object exists (fresh volume); not overwritten")
            xattrs = dict(obj.xattrs)
            if mark is not None and fresh:
                xattrs[WRITER_XATTR] = mark.encode()
            _write_object(live, obj.name, data, xattrs, dict(obj.omap))
            written.add(obj.name)
            if created is not None:
                created.add(obj.name)
        if exact and not fresh:
            for f in list(live.glob("*.json")):
                if _unq(f.name) not in written:
                    _remove_object(f)
        return len(written)

    def clone_from_snapshot(
        self,
        snap_name: str,
        target: str,
        objects: Iterable[VolumeObject] | None = None,
        *,
        fresh: bool = False,
        created: set[str] | None = None,
        mark: str | None = None,
    ) -> FakeVolume:
        if target == self.namespace:
            raise InvalidInput(f"clone of {self.url} into itself: use rollback_to")
        clone = FakeVolume(self.world, self.pool, target)
        clone.write_objects(
            self.read_objects_at(snap_name, objects), exact=True, fresh=fresh, created=created, mark=mark
        )
        return clone

    def remove_objects(self, names: Iterable[str], *, marked: str | None = None) -> int:
        live = self._live()
        removed = 0
        for name in set(names):
            f = live / _qname(name)
            if f.exists() and (marked is None or _read_meta(f)[1].get(WRITER_XATTR) == marked.encode()):
                _remove_object(f)
                removed += 1
        if live.is_dir() and not any(live.iterdir()):
            live.rmdir()  # a namespace with no object is no namespace (RADOS keeps no trace of it)
        return removed

    def unmark(self, names: Iterable[str]) -> int:
        live = self._live()
        done = 0
        for name in set(names):
            f = live / _qname(name)
            if f.exists():
                data, xattrs, omap = _read_object(f)
                if xattrs.pop(WRITER_XATTR, None) is not None:
                    _write_object(live, name, data, xattrs, omap)
                    done += 1
        return done

    def purge(self) -> int:
        live = self._live()
        n = len(list(live.glob("*.json"))) if live.is_dir() else 0
        shutil.rmtree(live, ignore_errors=True)
        return n

    def close(self) -> None:
        return None


def _tar_of(members: dict[str, bytes]) -> bytes:
    """A checkpoint archive as the real runtimes make it: a tar stream (drsvc checks its members)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
