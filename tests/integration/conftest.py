"""Integration tests run against the real local lab (dev/lab): Ceph + radosgw + Podman/CRIU.

* `lab` (session): uses a running lab (`dev/lab status`) or starts one (`dev/lab up`), parses
  `dev/lab env` into `lab.env`; `_lab_env` exports it into os.environ for each integration
  module while it runs (never for the unit tests that follow). When the lab
  cannot run here (not root, not Debian 12, `up` failed) every integration test is skipped with
  the reason (shown by `-ra`); set DRSVC_LAB_REQUIRED=1 (CI) to make that a failure instead.
  DRSVC_LAB_NO_START=1: never start the lab, skip when it is not running.
* `make_fleet(n, image="busybox", seed=42, data_mib=1)`: demo desktops with a per-session prefix
  (`it<hex>-001`, ...) so they never clash with a developer's desk-NNN fleet; the containers and
  RADOS namespaces it created are removed at teardown.
* `rados_cluster` (session): a connected `rados.Rados` (Debian's binding; the lab's pyshim is put
  on sys.path when the venv lacks it). `fleetdata`: the dev/fleet.py module.
* `podman_api`: a minimal libpod REST client over the lab's unix socket.

Every test under tests/integration is marked `integration`.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from envkit import DrsvcEnv

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LAB_SCRIPT = REPO / "dev" / "lab"
FLEET_PY = REPO / "dev" / "fleet.py"
DEBIAN_PY = "/usr/bin/python3"  # has python3-rados; dev/fleet.py's CLI runs with it


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # this hook sees the whole session's items: mark only ours
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


# ---------------------------------------------------------------- lab
@dataclass
class Lab:
    dir: Path
    env: dict[str, str]
    up_output: str = ""

    @property
    def ceph_conf(self) -> str:
        return self.env["CEPH_CONF"]

    @property
    def podman_socket(self) -> str:
        return self.env["DRSVC_PODMAN_SOCKET"]

    def run(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `dev/lab ARGS...`; raise with its output on failure when check."""
        p = subprocess.run([str(LAB_SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"dev/lab {shlex.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-4000:]}")
        return p

    def ceph(self, *args: str, timeout: float = 30) -> str:
        p = subprocess.run(
            ["ceph", "-c", self.ceph_conf, "--connect-timeout", "10", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if p.returncode != 0:
            raise AssertionError(f"ceph {shlex.join(args)} failed: {p.stderr}")
        return p.stdout


def _unavailable_reason() -> str | None:
    if sys.platform != "linux":
        return f"the lab needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the lab needs root (Ceph daemons, Podman rootful, CRIU)"
    try:
        osr = Path("/etc/os-release").read_text()
    except OSError:
        osr = ""
    if 'VERSION_ID="12"' not in osr or "ID=debian" not in osr:
        return "the lab needs Debian 12 (bookworm)"
    if not os.access(LAB_SCRIPT, os.X_OK):
        return f"{LAB_SCRIPT} missing or not executable"
    return None


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def parse_env(text: str) -> dict[str, str]:
    """`export K=V` lines (as printed by `dev/lab env`) -> dict."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("export "):
            continue
        k, _, v = line[len("export ") :].partition("=")
        vals = shlex.split(v)
        env[k] = vals[0] if vals else ""
    return env


def _ensure_rados_importable(env: dict[str, str]) -> None:
    try:
        import rados  # noqa: F401
    except ImportError:
        shim = env.get("DRSVC_LAB_PYSHIM") or str(Path(env["DRSVC_LAB_DIR"]) / "pyshim")
        if shim not in sys.path:
            sys.path.append(shim)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    required = os.environ.get("DRSVC_LAB_REQUIRED") == "1"

    def unavailable(reason: str) -> None:
        if required:
            pytest.fail(f"lab required (DRSVC_LAB_REQUIRED=1) but unavailable: {reason}", pytrace=False)
        pytest.skip(f"lab unavailable: {reason}")

    reason = _unavailable_reason()
    if reason:
        unavailable(reason)
    up_out = ""
    st = subprocess.run([str(LAB_SCRIPT), "status"], capture_output=True, text=True, timeout=120)
    if st.returncode != 0:
        if os.environ.get("DRSVC_LAB_NO_START") == "1":
            down = [
                ln.split()[0] for ln in st.stdout.splitlines() if any(w in ln for w in ("STOPPED", "UNREACH", "NOT "))
            ]
            unavailable(f"not running ({', '.join(down) or 'status failed'} down) and DRSVC_LAB_NO_START=1")
        t = time.monotonic()
        up = subprocess.run([str(LAB_SCRIPT), "up"], capture_output=True, text=True, timeout=1200)
        up_out = up.stderr
        if up.returncode != 0:
            unavailable(f"`dev/lab up` failed after {time.monotonic() - t:.0f} s:\n{_tail(up.stderr)}")
    envp = subprocess.run([str(LAB_SCRIPT), "env"], capture_output=True, text=True, timeout=30, check=True)
    env = parse_env(envp.stdout)
    _ensure_rados_importable(env)
    yield Lab(dir=Path(env["DRSVC_LAB_DIR"]), env=env, up_output=up_out)


@pytest.fixture(scope="module", autouse=True)
def _lab_env(lab: Lab) -> Iterator[None]:
    """The lab's settings (CEPH_CONF, S3 endpoint and keys, sockets) in os.environ for one
    integration module at a time: unit tests that run after it never see them."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in lab.env.items():
            mp.setenv(k, v)
        yield


# ---------------------------------------------------------------- rados + fleet data
@pytest.fixture(scope="session")
def rados_cluster(lab: Lab):
    try:
        import rados
    except ImportError as e:
        pytest.skip(f"python rados binding not importable (apt-get install python3-rados): {e}")
    cluster = rados.Rados(conffile=lab.ceph_conf)
    cluster.connect(timeout=15)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="session")
def fleetdata():
    """The dev/fleet.py module (expected_objects, verify_namespace, ...)."""
    spec = importlib.util.spec_from_file_location("drsvc_lab_fleet", FLEET_PY)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@dataclass
class FleetFactory:
    lab: Lab
    prefix: str
    created: list[str] = field(default_factory=list)

    def __call__(self, n: int, image: str = "busybox", seed: int = 42, data_mib: float = 1) -> list[str]:
        ids = [f"{self.prefix}-{i:03d}" for i in range(1, n + 1)]
        before = set(_podman_names())
        try:
            self.lab.run(
                "fleet",
                str(n),
                "--image",
                image,
                "--seed",
                str(seed),
                "--data-mib",
                f"{data_mib:g}",
                "--prefix",
                self.prefix,
                timeout=900,
            )
        finally:
            self.created += [d for d in ids if d not in before and d not in self.created]
        return ids

    def cleanup(self) -> None:
        # everything named with this factory's unique prefix: its desktops and any clone a test
        # restored beside them (e.g. it1a2b3c-001-clone)
        victims = [n for n in _podman_names() if n.startswith(self.prefix + "-")]
        if victims:
            subprocess.run(["podman", "rm", "-f", "-t", "0", *victims], capture_output=True, timeout=120)
        if self.created:
            subprocess.run(
                [
                    DEBIAN_PY,
                    str(FLEET_PY),
                    "purge",
                    "--conf",
                    self.lab.ceph_conf,
                    "--pool",
                    "desktops",
                    *[a for d in self.created for a in ("--desktop", d)],
                ],
                capture_output=True,
                timeout=300,
            )


def _podman_names(filter_: str | None = None) -> list[str]:
    cmd = ["podman", "ps", "-a", "--format", "{{.Names}}"]
    if filter_:
        cmd += ["--filter", filter_]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return p.stdout.split()


@pytest.fixture
def make_fleet(lab: Lab) -> Iterator[Callable[..., list[str]]]:
    """make_fleet(n, image="busybox"|"desktop", seed=42, data_mib=1) -> desktop ids (own prefix)."""
    factory = FleetFactory(lab, prefix=f"it{uuid.uuid4().hex[:6]}")
    yield factory
    factory.cleanup()


# ---------------------------------------------------------------- libpod REST API
class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 600):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class PodmanAPI:
    """Just enough of the libpod REST API (podman 4.3) for lab tests."""

    prefix = "/v4.3.1/libpod"

    def __init__(self, sock: str):
        self.sock = sock

    def request(
        self, method: str, path: str, params: dict | None = None, body=None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        c = _UnixHTTPConnection(self.sock)
        try:
            c.request(method, self.prefix + path + q, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def inspect(self, name: str) -> dict:
        st, body = self.request("GET", f"/containers/{urllib.parse.quote(name)}/json")
        assert st == 200, (st, body[:500])
        return json.loads(body)

    def checkpoint_export(self, name: str, dest: Path, **opts: str) -> int:
        params = {"export": "true", **opts}
        c = _UnixHTTPConnection(self.sock)
        try:
            c.request(
                "POST",
                f"{self.prefix}/containers/{urllib.parse.quote(name)}/checkpoint?" + urllib.parse.urlencode(params),
            )
            r = c.getresponse()
            if r.status != 200:
                raise AssertionError(f"checkpoint {name}: {r.status} {r.read()[:2000]!r}")
            n = 0
            with open(dest, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    n += len(chunk)
            return n
        finally:
            c.close()

    def restore_import(self, archive: Path, name: str | None = None, **opts: str) -> dict:
        params = {"import": "true", **opts}
        if name:
            params["name"] = name
        with open(archive, "rb") as f:
            st, body = self.request(
                "POST",
                "/containers/import/restore",
                params,
                body=f,
                headers={"Content-Type": "application/x-tar", "Content-Length": str(archive.stat().st_size)},
            )
        if st != 200:
            raise AssertionError(f"restore {archive}: {st} {body[:2000]!r}")
        return json.loads(body)

    def remove(self, name: str) -> None:
        st, body = self.request("DELETE", f"/containers/{urllib.parse.quote(name)}", {"force": "true", "timeout": "0"})
        assert st in (200, 204, 404), (st, body[:500])


@pytest.fixture
def podman_api(lab: Lab) -> PodmanAPI:
    return PodmanAPI(lab.podman_socket)


# ---------------------------------------------------------------- a drsvc deployment on the lab
@pytest.fixture
def drsvc_env(lab: Lab, tmp_path: Path, run_cli: Callable[..., Any]) -> Iterator[DrsvcEnv]:
    env = DrsvcEnv(tmp_path, f"rados://drsvc-hot/t{uuid.uuid4().hex[:8]}", run_cli)
    env.write()
    yield env
    env.cleanup()
