"""Webhook notifications against a real local HTTP receiver: once per change, retries with backoff."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from drsvc.config import NotifySection, WebhookSection
from drsvc.health import read_health
from drsvc.notify import Notifier, conditions, subject


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and answers ``fail_first`` of them with 503."""

    def __init__(self, fail_first: int = 0, status: int = 503) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.fail_first, self.status = fail_first, status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.paths.append(self.path)
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(receiver.status)
                    self.end_headers()
                    return
                receiver.bodies.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def config(*hooks: WebhookSection, attempts: int = 3) -> NotifySection:
    return NotifySection(webhooks=list(hooks), attempts=attempts, backoff_seconds=0.01, timeout_seconds=5)


def run(fleet, notify: NotifySection, now=None, sleeps=None):
    health = read_health(fleet.catalog, fleet.policies, now or fleet.now)
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return Notifier(fleet.catalog, notify, sleep=sleep).run(health)


def breach(fleet) -> None:
    fleet.desktop("d1")
    fleet.point("d1", timedelta(hours=5))


def test_a_breach_is_announced_once_and_its_end_once(fleet, receiver) -> None:
    breach(fleet)
    notify = config(WebhookSection(url=receiver.url()))
    run(fleet, notify)
    run(fleet, notify)  # nothing changed: nothing sent
    assert [(b["kind"], b["state"]) for b in receiver.bodies] == [("rpo_breach", "firing")]
    body = receiver.bodies[0]
    assert (body["desktop"], body["policy"], body["source"]) == ("d1", "gold", "drsvc")
    assert body["message"].startswith("RPO breached: d1 (gold) newest point 18000s old")
    fleet.point("d1", timedelta(minutes=1))  # a fresh point: the breach is over
    run(fleet, notify)
    assert [(b["kind"], b["state"]) for b in receiver.bodies] == [("rpo_breach", "firing"), ("rpo_breach", "resolved")]
    run(fleet, notify)
    assert len(receiver.bodies) == 2
    assert fleet.catalog.query("SELECT * FROM notifications") == []


def test_a_slack_message_shows_a_hostile_name_as_text(fleet, receiver) -> None:
    """A point's reason quotes names a desktop's processes chose (an object, a held file, what CRIU
    says of a file). Slack reads ``<!channel>``, ``<@U…>`` and ``<URL|text>`` in a message's text
    as a ping of everyone and a link, and a control character as itself: a tenant could have
    drsvc's bot page the whole channel with a link of its own. ``&``, ``<`` and ``>`` are escaped
    as Slack asks, and the text goes through ``printable`` like every other view."""
    fleet.desktop("d1")
    fleet.point("d1", timedelta(minutes=5))
    hostile = "list rados://desktops/d1: the object '<!channel> <https://evil.example/|re-login>\u202e' & more"
    fleet.point("d1", timedelta(minutes=2), status="failed", reason=hostile)
    run(fleet, config(WebhookSection(url=receiver.url("/slack"), format="slack")))
    (body,) = receiver.bodies
    text = body["text"]
    assert "<!channel>" not in text and "<https://" not in text and "\u202e" not in text, text
    assert "&lt;!channel&gt; &lt;https://evil.example/|re-login&gt;\\u202e' &amp; more" in text, text


def test_slack_payload_is_text(fleet, receiver) -> None:
    fleet.desktop("d1")
    fleet.point("d1", timedelta(minutes=5))
    fleet.point("d1", timedelta(minutes=2), status="failed", reason="pool full")
    run(fleet, config(WebhookSection(url=receiver.url("/slack"), format="slack")))
    assert receiver.paths == ["/slack"]
    (body,) = receiver.bodies
    assert set(body) == {"text"}
    assert (
        ":rotating_light:" in body["text"] and "backups of d1 (gold) fail: 1 in a row, last: pool full" in body["text"]
    )


def test_a_failing_receiver_is_retried_with_backoff_then_again_next_tick(fleet) -> None:
    receiver = Receiver(fail_first=5)
    try:
        breach(fleet)
        notify = config(WebhookSection(url=receiver.url()), attempts=3)
        sleeps: list[float] = []
        assert run(fleet, notify, sleeps=sleeps) == []
        assert sleeps == [0.01, 0.02]  # three attempts, doubling waits
        (row,) = fleet.catalog.query("SELECT * FROM notifications")
        assert row["sent_at"] is None and row["attempts"] == 1 and "HTTP 503" in row["last_error"]
        assert run(fleet, notify) == []  # before retry_at: not tried
        assert len(receiver.paths) == 3
        later = fleet.now + timedelta(minutes=3)
        delivered = run(fleet, notify, now=later)  # two more 503s, then delivered
        assert [d["state"] for d in delivered] == ["firing"]
        assert len(receiver.paths) == 6 and len(receiver.bodies) == 1
    finally:
        receiver.close()


def test_a_client_error_is_not_retried(fleet) -> None:
    receiver = Receiver(fail_first=1, status=404)
    try:
        breach(fleet)
        sleeps: list[float] = []
        run(fleet, config(WebhookSection(url=receiver.url())), sleeps=sleeps)
        assert sleeps == [] and len(receiver.paths) == 1
    finally:
        receiver.close()


def test_a_webhook_can_take_only_some_kinds(fleet, receiver) -> None:
    breach(fleet)
    run(fleet, config(WebhookSection(url=receiver.url(), events=["drill_failed"])))
    assert receiver.bodies == []


def test_every_kind_of_condition(fleet) -> None:
    fleet.desktop("d1")
    point = fleet.point("d1", timedelta(hours=5))
    fleet.point("d1", timedelta(hours=1), status="failed", reason="x")
    fleet.drill(timedelta(hours=1), [("d1", 50.0, False)])
    job = fleet.catalog.start_job("verify", policy="gold")
    fleet.catalog.finish_job(job, "failed", error="chunks missing")
    fleet.catalog.execute(
        "INSERT INTO restores (desktop_id, point_id, tier, started_at, target_seconds, status) "
        "VALUES ('d1', ?, 'hot', ?, 30, 'running')",
        [point, "2020-01-01T00:00:00.000000Z"],
    )
    found = list(conditions(read_health(fleet.catalog, fleet.policies, fleet.now)))
    kinds = sorted(c.kind for c in found)
    assert kinds == ["backup_failed", "drill_failed", "restore_interrupted", "rpo_breach", "verify_failed"]
    assert len({c.key for c in found}) == len(found)
    assert all(subject(c.key)["desktop"] == c.desktop for c in found)


def test_the_scheduler_notifies_after_its_tick(fleet, receiver, run_cli) -> None:
    """`run --once` with a [notify] section: a policy whose backups cannot run is announced."""
    path = fleet.config()
    path.write_text(
        path.read_text() + f'[notify]\nbackoff_seconds = 0\n[[notify.webhooks]]\nurl = "{receiver.url()}"\n'
    )
    fleet.desktop("d1", first_seen=timedelta(minutes=1))
    run_cli("--config", str(path), "run", "--once")  # no runtime configured: the backup window fails
    kinds = {(b["kind"], b["policy"], b["state"]) for b in receiver.bodies}
    assert ("backup_failed", "gold", "firing") in kinds, receiver.bodies
