"""The node name without ``/info`` when the runtime's service shares this host's UTS namespace.

A unix socket served by a thread of this process stands in for the Podman/Docker API: its peer is
this process, so the same UTS namespace. Every request it receives is recorded, so the tests see
whether drsvc asked ``/info``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from drsvc.runtimes import node
from drsvc.runtimes.docker.client import DockerClient
from drsvc.runtimes.podman import PodmanRuntime


class FakeApi:
    """A one-route HTTP server on a unix socket: ``GET .../info`` answers with ``hostname``."""

    def __init__(self, path: Path, hostname: str) -> None:
        self.requests: list[str] = []
        self.hostname = hostname
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(4096)
                    if not piece:
                        break
                    data += piece
                if not data:
                    continue  # a connect without a request (the peer check)
                self.requests.append(data.split(b" ")[1].decode())
                body = json.dumps({"host": {"hostname": self.hostname}, "Name": self.hostname}).encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                conn.sendall(head.encode() + body)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeApi]:
    served = FakeApi(tmp_path / "api.sock", "elsewhere")
    yield served
    served.close()


def test_the_listener_of_a_socket_is_this_process(api: FakeApi, tmp_path: Path) -> None:
    import os

    assert node.peer_pid(str(tmp_path / "api.sock")) == os.getpid()
    assert node.same_uts(os.getpid())
    assert node.local_node_name(str(tmp_path / "api.sock")) == socket.gethostname()


def test_no_socket_no_name(tmp_path: Path) -> None:
    assert node.peer_pid(str(tmp_path / "absent.sock")) is None
    assert node.local_node_name(str(tmp_path / "absent.sock")) is None


def test_podman_in_this_uts_namespace_is_not_asked(api: FakeApi, tmp_path: Path) -> None:
    runtime = PodmanRuntime(str(tmp_path / "api.sock"), timeout=5)
    assert runtime._node_name() == socket.gethostname()
    assert runtime._node_name() == socket.gethostname()
    assert api.requests == []


def test_podman_elsewhere_is_asked_once(api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "same_uts", lambda _pid: False)  # as if Podman ran in another container
    runtime = PodmanRuntime(str(tmp_path / "api.sock"), timeout=5)
    assert runtime._node_name() == "elsewhere"
    assert runtime._node_name() == "elsewhere"
    assert [p.rsplit("/", 1)[-1] for p in api.requests] == ["info"]


def test_docker_in_this_uts_namespace_is_not_asked(api: FakeApi, tmp_path: Path) -> None:
    client = DockerClient(str(tmp_path / "api.sock"), timeout=5)
    assert client.node_name() == socket.gethostname()
    assert api.requests == []
    assert client._api is None  # not even the SDK client was built
