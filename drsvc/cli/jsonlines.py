"""``--log-format json``: the CLI's own stderr lines as JSON objects, one a line.

In text form a command's notes ("restoring alice from … (cold tier)…", a restore's phases, a
warning) are rich console lines on stderr, not log records. Under ``--log-format json`` a log
shipper must be able to parse every line, so the console a command gets (``App.err``) is a
``JsonConsole``: each ``print`` becomes one object shaped like a log record (``time``, ``level``,
``event``, ``command``, ``message``), its markup dropped; progress is its own ``progress`` event with
its numbers as fields (``drsvc.cli.progress``) and the final error an ``error`` event with
``exit_code``, ``message`` and ``hint`` (``drsvc.cli.main``).
"""

from __future__ import annotations

import io
import sys
from typing import Any, TextIO

from drsvc.log import json_line

# a note's level, from how the text form colours it or what it starts with
_LEVELS = (("[red]", "error"), ("[yellow]", "warning"), ("drsvc: error:", "error"), ("drsvc: warning:", "warning"))


def _plain(obj: Any, markup: bool) -> str:
    """What a rich console would show for ``obj``, without colour: markup dropped, renderables drawn."""
    if isinstance(obj, str):
        if not markup:
            return obj
        from rich.text import Text

        try:
            return Text.from_markup(obj).plain
        except Exception:  # not valid markup after all (a name with brackets): the text as it is
            return obj
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=200, no_color=True, highlight=False).print(obj)
    return buffer.getvalue().rstrip("\n")


def level_of(text: str) -> str:
    """``error``, ``warning`` or ``info``: what a text-form line's colour or prefix says it is."""
    stripped = text.lstrip()
    for prefix, level in _LEVELS:
        if stripped.startswith(prefix):
            return level
    return "info"


class JsonConsole:
    """The part of rich's ``Console`` commands use on stderr, writing each print as one JSON line."""

    is_terminal = False
    quiet = False
    width = 200

    def __init__(self, command: str, stream: TextIO | None = None) -> None:
        self.command = command
        self._stream = stream

    @property
    def file(self) -> TextIO:
        return self._stream or sys.stderr

    def print(self, *objects: Any, markup: bool = True, **_options: Any) -> None:
        """One ``{command}.note`` event whose message is the text the console would have shown."""
        raw = " ".join(o if isinstance(o, str) else "" for o in objects)
        text = " ".join(_plain(o, markup) for o in objects)
        self.event(level_of(raw), f"{self.command}.note" if self.command else "note", text)

    def event(self, level: str, name: str, message: str, **fields: Any) -> None:
        """One JSON line: ``event`` ``name`` at ``level`` with ``fields`` (and the command)."""
        if self.command:
            fields = {"command": self.command, **fields}
        json_line(level, name, message, stream=self.file, **fields)
