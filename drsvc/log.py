"""Logging: stdlib ``logging`` under the ``drsvc`` logger, as text or one JSON object a line.

Modules log through ``logging.getLogger(__name__)`` and name what happened with ``event(...)``:
a short dotted *event* name (``backup.desktop``, ``scheduler.tick``) and the fields an operator
filters on (``desktop``, ``point``, ``job``, ``policy``, ``error``). ``--log-format json`` prints
each record as ``{"time", "level", "event", "desktop", "point", "job", "error", "message", ...}``
for journald, Loki or a log shipper; text is for people. Logs go to stderr; stdout stays for
command output and ``--json``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from drsvc.printable import printable

__all__ = ["FIELDS", "JsonFormatter", "TextFormatter", "event", "is_json", "json_line", "printable", "setup"]

FIELDS = ("event", "desktop", "point", "job", "policy", "error")
LOGGER = "drsvc"
_format = {"fmt": "text"}  # what ``setup`` was last asked for: the CLI's own lines follow it (``json_line``)


def _lines(text: str) -> str:
    """A multi-line text (a traceback) with each line ``printable``."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _shown(value: Any) -> Any:
    return printable(value) if isinstance(value, str) else value


def event(
    logger: logging.Logger,
    level: int,
    name: str,
    message: str,
    /,
    exc_info: BaseException | None = None,
    **fields: Any,
) -> None:
    """Log ``message`` as event ``name`` with ``fields`` (None values are left out).

    ``exc_info``: the exception being reported; its traceback is logged when it is not one of
    drsvc's own errors (a bug) or when debug logging is on.
    """
    if not logger.isEnabledFor(level):
        return
    from drsvc.errors import DrsvcError

    extra = {"event": name, **{k: v for k, v in fields.items() if v is not None}}
    trace = exc_info is not None and (
        not isinstance(exc_info, DrsvcError) or exc_info.traceback or logger.isEnabledFor(logging.DEBUG)
    )
    logger.log(level, message, extra={"drsvc": extra}, exc_info=exc_info if trace else None, stacklevel=2)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return dict(getattr(record, "drsvc", None) or {})


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, event, the drsvc fields, message."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": fields.pop("event", record.name),
        }
        for key in FIELDS[1:]:
            if key in fields:
                doc[key] = fields.pop(key)
        doc.update(fields)
        doc["message"] = record.getMessage()
        if record.exc_info:
            doc.setdefault("error", str(record.exc_info[1]))
        # JSON escapes C0 controls itself, not C1 ones, bidi overrides or lone surrogates
        doc = {k: _shown(v) for k, v in doc.items()}
        if record.exc_info:
            doc["traceback"] = _lines(self.formatException(record.exc_info))
        return json.dumps(doc, default=str, ensure_ascii=False)


def is_json() -> bool:
    """Whether ``--log-format json`` is in force: every line drsvc writes is then a JSON object."""
    return _format["fmt"] == "json"


def json_line(level: str, name: str, message: str, /, stream: TextIO | None = None, **fields: Any) -> None:
    """Write one JSON object line shaped like a log record (``time``, ``level``, ``event``, fields,
    ``message``) to ``stream`` (stderr), whatever the log level: the CLI's progress, notes and
    final error under ``--log-format json``, which in text form are console lines, not logs."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    doc: dict[str, Any] = {"time": stamp, "level": level, "event": name}
    doc.update({k: _shown(v) for k, v in fields.items()})
    doc["message"] = printable(message)
    out = stream or sys.stderr
    out.write(json.dumps(doc, default=str, ensure_ascii=False) + "\n")
    out.flush()


class TextFormatter(logging.Formatter):
    """``2026-12-06T10:00:00Z warning backup.desktop desktop=d1 point=… message``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        name = fields.pop("event", record.name)
        error = fields.pop("error", None)
        pairs = " ".join(f"{k}={printable(str(v))}" for k, v in fields.items())
        message = record.getMessage()
        line = f"{stamp} {record.levelname.lower()} {name}" + (f" {pairs}" if pairs else "") + f": {printable(message)}"
        if error is not None and str(error) not in message:
            line += f" ({printable(str(error))})"
        if record.exc_info:
            line += "\n" + _lines(self.formatException(record.exc_info))
        return line


def level_for(verbose: int, quiet: int, default: int = logging.WARNING) -> int:
    """-v steps down from ``default`` (INFO, DEBUG), -q steps up (ERROR, CRITICAL)."""
    steps = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    index = steps.index(default) - verbose + quiet
    return steps[max(0, min(index, len(steps) - 1))]


def setup(level: int, fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send the ``drsvc`` logger's records at ``level`` and above to ``stream`` (stderr) as ``fmt``."""
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if getattr(h, "_drsvc", False)]:
        logger.removeHandler(old)
    _format["fmt"] = fmt
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._drsvc = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler
