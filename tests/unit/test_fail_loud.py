"""Expected failures are one line naming component, operation and runbook, with the contract's exit code.

Backend outages (unreachable, forbidden, timed out, throttled) of S3 and Ceph; ``--debug`` shows the
traceback; ``verify`` goes on past an unreachable tier (exit 6); ``restore --at`` a future time is
exit 2; the daemon survives any exception in a tick.
"""

from __future__ import annotations

import errno
import http.server
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture)

from drsvc import ceph, clock
from drsvc.crypto import generate_key_file
from drsvc.errors import (
    EXIT_INVALID,
    EXIT_PARTIAL,
    BackendError,
    BackendForbidden,
    BackendThrottled,
    BackendTimeout,
    BackendUnavailable,
    DrsvcError,
)
from drsvc.restore import RestoreJob
from drsvc.scheduler import Scheduler, Stopper, TickReport
from drsvc.storage.s3 import S3Store
from drsvc.tiering import TierJob
from drsvc.verify import VerifyJob


# ---------------------------------------------------------------------- S3
@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("SignatureDoesNotMatch", 403, BackendForbidden),
        ("InvalidAccessKeyId", 403, BackendForbidden),
        ("SlowDown", 503, BackendThrottled),
        ("InternalError", 500, BackendUnavailable),
    ],
)
def test_s3_error_codes_become_outages(creds: None, code: str, status: int, kind: type) -> None:
    store = S3Store("bucket", "fleet", endpoint_url="http://127.0.0.1:9", create=False, max_attempts=1)
    with Stubber(store._client) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        with pytest.raises(kind) as caught:
            store.get("chunks/ab/cd")
    e = caught.value
    assert e.traceback is False
    assert "s3 store s3://bucket/fleet" in str(e) and "get chunks/ab/cd" in str(e)
    assert "runbook: drsvc runbook show s3-unavailable" in str(e)
    assert e.retryable is (kind is not BackendForbidden)


def test_s3_connection_refused_is_unreachable(creds: None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    store = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{port}", create=False, max_attempts=1)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        store.get("x")


def test_s3_stalled_endpoint_times_out_after_the_configured_read_timeout(creds: None) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (the kernel does), never answers: a stopped radosgw
    try:
        port = listener.getsockname()[1]
        store = S3Store(
            "bucket", endpoint_url=f"http://127.0.0.1:{port}", create=False, max_attempts=1, read_timeout=0.5
        )
        with pytest.raises(BackendTimeout, match="timed out"):
            store.get("x")
    finally:
        listener.close()


class _Refuse(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that refuses every request's credentials."""

    def _deny(self) -> None:
        body = b"<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _deny

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def refusing_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _config(tmp_path: Path, endpoint: str) -> Path:
    (tmp_path / "policies").mkdir()
    generate_key_file(tmp_path / "drsvc.key")
    path = tmp_path / "drsvc.toml"
    path.write_text(
        f'[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n[hot]\nstore = "file://{tmp_path}/hot"\n'
        f'[cold]\nstore = "s3://bucket/fleet"\nendpoint_url = "{endpoint}"\n[timeouts]\ns3_attempts = 1\n'
    )
    return path


def test_wrong_s3_secret_is_one_line_and_debug_shows_the_traceback(
    creds: None, tmp_path: Path, refusing_endpoint: str, run_cli: Any
) -> None:
    config = _config(tmp_path, refusing_endpoint)
    result = run_cli("--config", str(config), "catalog", "check")
    assert result.code == 1, result.output
    assert "Traceback" not in result.stderr, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("drsvc: error: s3 store s3://bucket/fleet")
    assert "forbidden" in line and "drsvc runbook show s3-unavailable" in line
    debug = run_cli("--config", str(config), "--debug", "catalog", "check")
    assert debug.code == 1 and "Traceback" in debug.stderr, debug.output


# ---------------------------------------------------------------------- Ceph
@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.ETIMEDOUT, BackendTimeout),
        (errno.EACCES, BackendForbidden),
        (errno.ENOTCONN, BackendUnavailable),
    ],
)
def test_ceph_failures_become_outages(code: int, kind: type) -> None:
    e = ceph.rv_error("read rados://pool/ns/obj", -code)
    assert type(e) is kind
    assert str(e).startswith("ceph (") and "read rados://pool/ns/obj" in str(e)
    assert "runbook: drsvc runbook show ceph-unavailable" in str(e)
    assert not e.traceback


def test_ceph_other_failures_stay_unexpected() -> None:
    e = ceph.rv_error("write x", -errno.EIO)
    assert type(e) is BackendError and e.traceback


def test_ceph_timeouts_reach_librados() -> None:
    conf = ceph.Timeouts(op_seconds=7, connect_seconds=3).conf()
    assert conf == {"client_mount_timeout": "3", "rados_mon_op_timeout": "7", "rados_osd_op_timeout": "7"}


# ---------------------------------------------------------------------- verify, restore --at
@pytest.fixture
def kit(tmp_path: Path, aws: None) -> Iterator[ColdKit]:  # noqa: F811
    kit = ColdKit(tmp_path)
    kit.policy("std", ["alice"], tiering={"after": "1h", "storage_class": "STANDARD"})
    kit.old = kit.point("alice", clock.now() - timedelta(hours=3), b"x" * 300_000, policy="std")
    TierJob(kit.services, None).run()
    kit.new = kit.point("alice", clock.now() - timedelta(minutes=1), b"y" * 300_000, policy="std")
    yield kit
    kit.catalog.close()


def _down(*_args: Any, **_kw: Any) -> Any:
    raise BackendUnavailable("s3 store s3://x (endpoint y)", "list", "connection refused", runbook="s3-unavailable")


def test_verify_goes_on_past_an_unreachable_tier(kit: ColdKit, monkeypatch: pytest.MonkeyPatch, run_cli: Any) -> None:
    for name in ("get", "list", "get_range", "get_many"):
        monkeypatch.setattr(S3Store, name, _down)
    kit.fresh_services()
    report = VerifyJob(kit.services).run(None)
    assert report.exit_code == EXIT_PARTIAL and report.ok
    assert set(report.chunks_checked) == {"hot"}  # the hot copies were checked all the same
    assert report.unchecked_points == {"cold": [kit.old]}
    result = run_cli("--config", str(kit.root / "drsvc.toml"), "--json", "verify", "--all")
    assert result.code == EXIT_PARTIAL, result.output
    assert result.json()["unchecked"][0]["points"] == [kit.old]
    assert "1 cold copies could not be checked" in result.stderr and "Traceback" not in result.stderr


def test_restore_at_a_future_time_is_invalid_input(kit: ColdKit, run_cli: Any) -> None:
    later = clock.to_iso(clock.now() + timedelta(days=1))
    result = run_cli("--config", str(kit.root / "drsvc.toml"), "restore", "alice", "--at", later, "--dry-run")
    assert result.code == EXIT_INVALID, result.output
    assert "in the future" in result.stderr
    job = RestoreJob(kit.services)
    assert job.choose_point("alice", at=clock.now() - timedelta(hours=1))["id"] == kit.old
    assert job.choose_point("alice", at=clock.now())["id"] == kit.new


# ---------------------------------------------------------------------- the daemon
def test_the_daemon_survives_any_exception_in_a_tick(kit: ColdKit, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    scheduler = Scheduler(kit.services, on_event=lambda kind, **f: events.append((kind, f)))
    stopper = Stopper()
    ticks: list[int] = []

    def tick(**_kw: Any) -> TickReport:
        ticks.append(1)
        if len(ticks) == 1:
            raise RuntimeError("a bug in a tick")
        if len(ticks) == 2:
            raise BackendUnavailable("ceph (x)", "stat", "down", runbook="ceph-unavailable")
        stopper.event.set()
        return TickReport(clock.now(), False)

    monkeypatch.setattr(scheduler, "tick", tick)
    monkeypatch.setattr(Stopper, "sleep", lambda self, seconds: self.event.is_set())
    scheduler.serve(stopper)
    assert len(ticks) == 3 and scheduler.tick_errors == 2
    errors = [f for kind, f in events if kind == "error"]
    assert "a bug in a tick" in str(errors[0]["error"]) and "Traceback" in errors[0]["traceback"]
    assert isinstance(errors[1]["error"], DrsvcError) and errors[1]["traceback"] is None
