"""Webhook notifications: a failure or a missed objective is announced once, and its end once.

After every scheduler tick, ``Notifier.run`` reads the fleet's health (``drsvc.health``) and turns
it into *conditions*, each with a stable key:

- ``backup_failed``: a desktop's backups fail (failed points since its last complete one; each
  point already had the job's retries), or a policy's window keeps failing before any point;
- ``rpo_breach``: a desktop's newest point is older than its policy's RPO;
- ``drill_failed``: a policy's last drill failed or ran over its RTO objective;
- ``verify_failed``: a policy's last verification found damage;
- ``restore_interrupted``: a restore started and never finished.

A condition that appears is POSTed as ``firing``, one that disappears as ``resolved``. The
``notifications`` table remembers what each webhook was last told, so a tick never repeats it, and
a delivery that failed every attempt (with backoff) is tried again on the next tick. Two payloads:
drsvc's JSON document, and ``{"text": ...}`` for Slack-compatible incoming webhooks.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from drsvc import __version__, clock
from drsvc.catalog import Catalog
from drsvc.config import NotifySection, WebhookSection
from drsvc.health import FleetHealth
from drsvc.log import event
from drsvc.printable import printable

__all__ = ["Condition", "Notifier", "conditions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Condition:
    """Something wrong right now; ``key`` identifies it across ticks (and carries its subject)."""

    kind: str
    message: str
    desktop: str | None = None
    policy: str | None = None
    ref: str | None = None  # what else tells two conditions of a kind apart (a restore's id)

    @property
    def key(self) -> str:
        subject = {"kind": self.kind, "desktop": self.desktop, "policy": self.policy, "ref": self.ref}
        return json.dumps(subject, sort_keys=True, separators=(",", ":"))


def subject(key: str) -> dict[str, Any]:
    """The desktop and policy a notification's key names."""
    doc = json.loads(key)
    return {"desktop": doc.get("desktop"), "policy": doc.get("policy")}


def conditions(health: FleetHealth) -> Iterator[Condition]:
    """Every condition the fleet is in (pure over ``health``)."""
    for d in health.desktops:
        if d.consecutive_failures:
            yield Condition(
                "backup_failed",
                f"backups of {d.desktop} ({d.policy}) fail: {d.consecutive_failures} in a row, last: {d.last_error}",
                d.desktop,
                d.policy,
            )
        if d.rpo_missed:
            age = "no point yet" if d.last_point_at is None else f"newest point {round(d.age_seconds or 0)}s old"
            yield Condition(
                "rpo_breach",
                f"RPO breached: {d.desktop} ({d.policy}) {age}, objective {round(d.rpo_seconds or 0)}s",
                d.desktop,
                d.policy,
            )
    for p in health.policies:
        if p.attempts:
            yield Condition(
                "backup_failed",
                f"backups of policy {p.policy} failed {p.attempts} time(s) in a row: {p.last_error}",
                policy=p.policy,
            )
        if p.last_drill_status == "failed" or p.rto_missed:
            why = f"took up to {p.last_drill_max_rto}s, objective {p.rto_seconds}s" if p.rto_missed else "failed"
            yield Condition("drill_failed", f"the last drill of {p.policy} {why}", policy=p.policy)
        if p.last_verify_ok is False:
            yield Condition(
                "verify_failed",
                f"verification of {p.policy} found damage: {p.last_verify_error}",
                policy=p.policy,
            )
    for r in health.interrupted_restores:
        yield Condition(
            "restore_interrupted",
            f"the restore of {r['desktop_id']} from {r['point_id']} started {r['started_at']} and never finished; "
            "the desktop may be down",
            desktop=r["desktop_id"],
            ref=str(r["id"]),
        )


def slack_text(message: str) -> str:
    """``message`` as Slack shows it literally: a reason quotes names a desktop's processes chose, and
    Slack reads ``<!channel>``, ``<@user>`` and ``<URL|text>`` as a ping and a link (it asks for
    ``&``, ``<`` and ``>`` to be escaped so); control characters are escaped as in every view."""
    return printable(message).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(hook: WebhookSection, note: dict[str, Any]) -> dict[str, Any]:
    """What one webhook receives for one notification row."""
    if hook.format == "slack":
        mark = ":white_check_mark: resolved" if note["state"] == "resolved" else ":rotating_light:"
        return {"text": f"{mark} drsvc on {socket.gethostname()}: {slack_text(note['message'])}"}
    return {
        "source": "drsvc",
        "version": __version__,
        "host": socket.gethostname(),
        "kind": note["kind"],
        "key": note["key"],
        "state": note["state"],
        "since": note["since"],
        "message": note["message"],
        "desktop": note.get("desktop"),
        "policy": note.get("policy"),
    }


class DeliveryError(Exception):
    """One POST failed; ``retry`` says whether trying again can help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def post(url: str, body: dict[str, Any], timeout: float) -> None:
    """POST ``body`` as JSON; a 2xx is delivered, 408/429/5xx and network errors may be retried."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"drsvc/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as e:
        raise DeliveryError(f"HTTP {e.code} from {url}", retry=e.code in (408, 429) or e.code >= 500) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DeliveryError(f"{url}: {reason}", retry=True) from None


class Notifier:
    """Compare the fleet's conditions with what was notified, and tell the webhooks the difference."""

    def __init__(
        self,
        catalog: Catalog,
        config: NotifySection,
        *,
        send: Callable[[str, dict[str, Any], float], None] = post,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.catalog = catalog
        self.config = config
        self.send = send
        self.sleep = sleep

    def run(self, health: FleetHealth) -> list[dict[str, Any]]:
        """Record state changes, deliver what is pending; returns the notifications delivered."""
        now = clock.to_iso(health.now)
        current = {c.key: c for c in conditions(health)}
        known = {r["key"]: r for r in self.catalog.query("SELECT * FROM notifications")}
        with self.catalog.transaction():
            for key, c in current.items():
                row = known.get(key)
                if row is None or row["state"] == "resolved":
                    self._set(key, c.kind, "firing", now, c.message)
            for key, row in known.items():
                if row["state"] == "firing" and key not in current:
                    self._set(key, row["kind"], "resolved", now, f"resolved: {row['message']}")
        return self.deliver(now)

    def _set(self, key: str, kind: str, state: str, now: str, message: str) -> None:
        self.catalog.execute(
            "INSERT INTO notifications (key, kind, state, since, message) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET state = excluded.state, since = excluded.since, "
            "message = excluded.message, sent_at = NULL, attempts = 0, retry_at = NULL, last_error = NULL",
            [key, kind, state, now, message],
        )

    def deliver(self, now: str) -> list[dict[str, Any]]:
        pending = self.catalog.query(
            "SELECT * FROM notifications WHERE sent_at IS NULL AND (retry_at IS NULL OR retry_at <= ?) "
            "ORDER BY since, key",
            [now],
        )
        delivered = []
        for note in pending:
            note.update(subject(note["key"]))
            error = self._deliver_one(note)
            if error is None:
                self.catalog.execute("UPDATE notifications SET sent_at = ? WHERE key = ?", [now, note["key"]])
                delivered.append(note)
                if note["state"] == "resolved":  # nothing left to remember once its end is announced
                    self.catalog.execute(
                        "DELETE FROM notifications WHERE key = ? AND state = 'resolved'", [note["key"]]
                    )
                continue
            attempts = note["attempts"] + 1
            retry_at = clock.to_iso(clock.from_iso(now) + timedelta(minutes=min(2**attempts, 60)))
            self.catalog.execute(
                "UPDATE notifications SET attempts = ?, retry_at = ?, last_error = ? WHERE key = ?",
                [attempts, retry_at, error, note["key"]],
            )
            event(log, logging.ERROR, "notify.failed", f"notification {note['key']} not delivered", error=error)
        return delivered

    def _deliver_one(self, note: dict[str, Any]) -> str | None:
        """Send to every webhook that wants this kind; None when all took it, else the last error."""
        error = None
        for hook in self.config.webhooks:
            if hook.events is not None and note["kind"] not in hook.events:
                continue
            wait = self.config.backoff_seconds
            for attempt in range(1, self.config.attempts + 1):
                try:
                    self.send(hook.url, payload(hook, note), self.config.timeout_seconds)
                    event(log, logging.INFO, "notify.sent", f"{note['state']}: {note['message']}", key=note["key"])
                    break
                except DeliveryError as e:
                    if not e.retry or attempt == self.config.attempts:
                        error = str(e)
                        break
                    self.sleep(wait)
                    wait *= 2
        return error
