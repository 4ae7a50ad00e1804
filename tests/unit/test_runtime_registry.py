"""Runtime registry, URL parsing and the Podman adapter's offline behaviour (fake libpod socket)."""

from __future__ import annotations

import io
import json
import socketserver
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, cast

import pytest

from drsvc.errors import BackendError, InvalidInput, NotFound
from drsvc.runtimes import ContainerRuntime, DesktopRef, node, open_runtime, register_runtime, registered_runtimes
from drsvc.runtimes.archive import rewrite_archive
from drsvc.runtimes.base import desktop_from_labels, with_criu_log
from drsvc.runtimes.podman import PodmanRuntime

CID = "c" * 64


# ---------------------------------------------------------------------- registry
def test_podman_is_built_in() -> None:
    assert "podman" in registered_runtimes()
    rt = open_runtime("podman:///run/podman/podman.sock")
    assert isinstance(rt, PodmanRuntime) and isinstance(rt, ContainerRuntime)
    assert rt.url == "podman:///run/podman/podman.sock"
    rt.close()


@pytest.mark.parametrize("url", ["", "podman", "/run/podman.sock", "podman:/x.sock", "unix:///x.sock", "nope://x"])
def test_malformed_or_unknown_urls_are_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInput) as e:
        open_runtime(url)
    assert "podman" in str(e.value)  # lists what is known


@pytest.mark.parametrize(
    "url", ["podman://host/run/podman.sock", "podman://relative.sock", "podman:///x.sock?tls=1", "podman://"]
)
def test_malformed_podman_urls(url: str) -> None:
    with pytest.raises(InvalidInput, match="podman:///"):
        open_runtime(url)


def test_add_on_registers_like_a_built_in() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def factory(url: str, **options: Any) -> Any:
        seen.append((url, options))
        return "fake-runtime"

    register_runtime("Fake", factory)
    try:
        assert open_runtime("fake://node-1", timeout=3) == "fake-runtime"
        assert seen == [("fake://node-1", {"timeout": 3})]
        register_runtime("lazy", "no_such_module_anywhere:from_url")
        with pytest.raises(InvalidInput, match="not installed"):
            open_runtime("lazy://x")
    finally:
        from drsvc import runtimes

        runtimes._REGISTRY.unregister("fake")
        runtimes._REGISTRY.unregister("lazy")


def test_desktop_ref_from_labels() -> None:
    d = desktop_from_labels(
        name="c1",
        container_id=CID,
        labels={"drsvc.desktop": "alice", "drsvc.volume": "rados://desktops/alice", "drsvc.tenant": "acme"},
        state="running",
    )
    assert (d.desktop_id, d.volume, d.tenant, d.container) == (
        "alice",
        "rados://desktops/alice",
        "acme",
        "c1",
    )
    assert d.as_dict()["labels"]["drsvc.tenant"] == "acme"
    bare = desktop_from_labels(name="c2", container_id=CID, labels=None)
    assert (bare.desktop_id, bare.volume, bare.tenant) == ("c2", None, None)
    hash(d)  # frozen and hashable despite the labels dict


# ---------------------------------------------------------------------- podman adapter, fake socket
def test_missing_socket_says_the_service_is_not_running(tmp_path: Path) -> None:
    rt = open_runtime(f"podman://{tmp_path}/podman.sock")
    with pytest.raises(BackendError, match="Podman API service is not running at"):
        rt.list_desktops()
    with pytest.raises(BackendError, match="not running"), rt.checkpoint("x"):
        pass


class FakeLibpod(BaseHTTPRequestHandler):
    routes: ClassVar[dict[tuple[str, str], tuple[int, Any]]] = {}
    requests: ClassVar[list[tuple[str, str, bytes, dict[str, str]]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while (n := int(self.rfile.readline().strip(), 16)) > 0:
                body += self.rfile.read(n)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0].removeprefix("/v4.3.1/libpod")
        self.requests.append((self.command, self.path, body, dict(self.headers)))
        status, doc = self.routes.get(
            (self.command, path), (404, {"cause": "no such container", "message": f"no container {path}"})
        )
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _handle


def last_restore() -> tuple[str, str, bytes, dict[str, str]]:
    return [r for r in FakeLibpod.requests if "/restore" in r[1]][-1]


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[PodmanRuntime]:
    sock = str(tmp_path / "p.sock")
    FakeLibpod.routes, FakeLibpod.requests = {}, []
    server = _Server(sock, FakeLibpod)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    rt = open_runtime(f"podman://{sock}")
    assert isinstance(rt, PodmanRuntime)
    yield rt
    server.shutdown()
    server.server_close()


def inspect_doc(name: str, mode: str = "bridge") -> dict[str, Any]:
    return {
        "Id": CID,
        "Name": name,
        "ImageName": "localhost/img:1",
        "Image": "d" * 64,
        "Config": {"Labels": {"drsvc.desktop": "alice", "drsvc.tenant": "acme"}},
        "State": {"Status": "running"},
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Networks": {"podman": {}} if mode == "bridge" else {}},
    }


def test_error_translation(fake: PodmanRuntime) -> None:
    with pytest.raises(NotFound, match="no container"):
        fake.inspect("ghost")
    FakeLibpod.routes[("POST", "/containers/c1/pause")] = (
        500,
        {"cause": "container state improper", "message": "c1 is not running"},
    )
    with pytest.raises(BackendError, match=r"c1 is not running \(HTTP 500\)"):
        fake.pause("c1")
    fake.remove("ghost")  # 404 is fine for remove
    deletes = [path for method, path, *_ in FakeLibpod.requests if method == "DELETE"]
    assert deletes[0].endswith("/containers/ghost?force=true&timeout=0")


def test_inspect_and_list(fake: PodmanRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    # this fake serves from this process: as if Podman ran in another UTS namespace, it is asked
    # (test_runtime_node.py: in this one, it is not)
    monkeypatch.setattr(node, "same_uts", lambda _pid: False)
    FakeLibpod.routes[("GET", "/info")] = (200, {"host": {"hostname": "node-a"}})
    FakeLibpod.routes[("GET", "/containers/c1/json")] = (200, inspect_doc("c1"))
    FakeLibpod.routes[("GET", "/containers/c2/json")] = (200, inspect_doc("c2", "none"))
    FakeLibpod.routes[("GET", "/containers/json")] = (
        200,
        [
            {
                "Id": CID,
                "Names": ["c1"],
                "Labels": {"drsvc.desktop": "alice"},
                "Image": "localhost/img:1",
                "ImageID": "d" * 64,
                "State": "running",
                "Networks": ["podman"],
            },
        ],
    )
    d = fake.inspect("c1")
    assert isinstance(d, DesktopRef)
    assert (d.desktop_id, d.tenant, d.network, d.node, d.image_id) == (
        "alice",
        "acme",
        "podman",
        "node-a",
        "d" * 64,
    )
    assert fake.inspect("c2").network == "none"
    (listed,) = fake.list_desktops()
    assert (listed.desktop_id, listed.network, listed.state) == ("alice", "podman", "running")
    assert "label" in FakeLibpod.requests[-1][1]


def test_restore_streams_chunked_or_with_length(fake: PodmanRuntime) -> None:
    FakeLibpod.routes[("POST", "/containers/import/restore")] = (200, {"Id": CID})
    FakeLibpod.routes[("GET", f"/containers/{CID}/json")] = (200, inspect_doc("c1-clone"))
    archive = make_tar({"config.dump": b'{"networkMode": "bridge"}', "checkpoint/pages-1.img": b"x" * 5000})
    ref = fake.restore(io.BytesIO(archive), name="c1-clone")
    assert ref.container == "c1-clone"
    _, path, body, headers = last_restore()
    assert headers.get("Transfer-Encoding") == "chunked" and body == archive
    assert "name=c1-clone" in path and "ignoreStaticIP=true" in path and "tcpEstablished=true" in path
    fake.restore(io.BytesIO(archive), size=len(archive), tcp_established=False)
    _, path, body, headers = last_restore()
    assert headers.get("Content-Length") == str(len(archive)) and body == archive
    assert "name=" not in path and "tcpEstablished=false" in path
    FakeLibpod.routes[("POST", "/containers/import/restore")] = (500, {"message": "name already in use"})
    with pytest.raises(BackendError, match="already in use"):
        fake.restore(io.BytesIO(archive))


RESTORE_LOG = """\
(00.000046) Version: 4.2 (gitid 0)
(00.081794) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.190000) Running pre-restore scripts
(00.210000) Error (criu/mount.c:2931): mnt: Can't mount at ./etc/hostname: No such file or directory
(00.210100) Error (criu/cr-restore.c:2442): Restoring FAILED.
"""


def test_criu_failure_names_the_reason_from_its_log(tmp_path: Path) -> None:
    log = tmp_path / "userdata" / "restore.log"
    log.parent.mkdir()
    log.write_text(RESTORE_LOG)
    message = f"runc: criu failed: type NOTIFY errno 0\nlog file: {log}: OCI runtime error"
    said = with_criu_log(message)
    assert said.startswith(message)
    assert "Can't mount at ./etc/hostname" in said and "Restoring FAILED." in said
    assert "Running pre-restore scripts" not in said  # error lines only, when there are any
    assert said.count("Error (") == 3  # all three: the default keeps the last four error lines
    assert "rlimit" not in with_criu_log(message, lines=2)
    # the teardown's errors after "Restoring FAILED." do not push the reason out
    log.write_text(
        RESTORE_LOG
        + "(00.220000) Error (criu/cgroup.c:2055): cg: cgroupd: recv req error: No such file or directory\n" * 3
    )
    said = with_criu_log(message)
    assert "Can't mount at ./etc/hostname" in said and "cgroupd" not in said, said
    log.write_text("(00.1) Running pre-restore scripts\n(00.2) Restore finished with an odd ending\n")
    assert with_criu_log(message).endswith(
        "[CRIU log: (00.1) Running pre-restore scripts | (00.2) Restore finished with an odd ending]"
    )
    log.unlink()  # the runtime deleted it with the task: the message stays as it was
    assert with_criu_log(message) == message
    assert with_criu_log("criu failed: type RESTORE errno 1") == "criu failed: type RESTORE errno 1"


def test_restore_error_carries_the_criu_log(fake: PodmanRuntime, tmp_path: Path) -> None:
    log = tmp_path / "restore.log"
    log.write_text(RESTORE_LOG)
    FakeLibpod.routes[("POST", "/containers/import/restore")] = (
        500,
        {"message": f"runc: criu failed: type NOTIFY errno 0\nlog file: {log}: OCI runtime error"},
    )
    archive = make_tar({"config.dump": b'{"networkMode": "bridge"}', "checkpoint/pages-1.img": b"x" * 10})
    with pytest.raises(BackendError, match=r"(?s)type NOTIFY errno 0.*Can't mount at \./etc/hostname"):
        fake.restore(io.BytesIO(archive), name="c1-clone")


def test_restore_without_network_rewrites_config(fake: PodmanRuntime) -> None:
    FakeLibpod.routes[("POST", "/containers/import/restore")] = (200, {"Id": CID})
    FakeLibpod.routes[("GET", f"/containers/{CID}/json")] = (200, inspect_doc("sandbox", "none"))
    archive = make_tar(
        {
            "config.dump": json.dumps({"networkMode": "bridge", "newNetworks": {"podman": {}}}).encode(),
            "network.status": b"{}",
            "spec.dump": b"{}",
        }
    )
    fake.restore(io.BytesIO(archive), name="sandbox", network="none")
    body = last_restore()[2]
    members = read_tar(body)
    assert set(members) == {"config.dump", "spec.dump"}
    cfg = json.loads(members["config.dump"])
    assert cfg["networkMode"] == "none" and "newNetworks" not in cfg and cfg["createNetNS"] is True
    with pytest.raises(InvalidInput):
        fake.restore(io.BytesIO(archive), name="x", network="host")


# ---------------------------------------------------------------------- archive rewriting
def make_tar(members: dict[str, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        d = tarfile.TarInfo("checkpoint")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def read_tar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


class CountingReader(io.RawIOBase):
    """A stream that records the largest single read, to prove bounded memory."""

    def __init__(self, data: bytes) -> None:
        self.src = io.BytesIO(data)
        self.max_read = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.max_read = max(self.max_read, n if n >= 0 else 1 << 62)
        return self.src.read(n)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_rewrite_archive_edits_drops_and_streams(fmt: int) -> None:
    long_name = "checkpoint/" + "n" * 120 + ".img"
    big = bytes(range(256)) * 12_000  # 3 MB, larger than one read
    members = {"config.dump": b'{"a": 1}', "network.status": b"{}", "checkpoint/pages-1.img": big}
    if fmt != tarfile.USTAR_FORMAT:
        members[long_name] = b"long"
    src = CountingReader(make_tar(members, fmt))
    out = b"".join(
        rewrite_archive(
            cast(BinaryIO, src), {"config.dump": lambda b: b.replace(b"1", b"22222"), "network.status": None}
        )
    )
    got = read_tar(out)
    assert got["config.dump"] == b'{"a": 22222}'
    assert "network.status" not in got
    assert got["checkpoint/pages-1.img"] == big
    if fmt != tarfile.USTAR_FORMAT:
        assert got[long_name] == b"long"
    assert src.max_read <= 1 << 20


def test_rewrite_archive_rejects_garbage() -> None:
    with pytest.raises(BackendError, match="not a tar"):
        b"".join(rewrite_archive(io.BytesIO(b"x" * 2048), {}))
