"""Incident runbooks: the Markdown files shipped in ``drsvc/data/runbooks/``, found, listed and parsed.

A runbook is ``runbooks/<name>.md``; its first ``# `` heading is its title and the first
paragraph after it its summary. The commands an operator types are in fenced ``sh`` blocks; the
test suite checks that every ``drsvc ...`` line there names a command and options that exist.

Where the runbooks are: ``$DRSVC_RUNBOOKS`` when set (a site's own runbooks), else the ones shipped
inside the package (``runbooks/`` at the top of a checkout is a symlink to them).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from drsvc import data
from drsvc.errors import NotFound

__all__ = ["Runbook", "argv", "commands_in", "find", "runbook_dir", "runbooks"]

_FENCE = re.compile(r"^```(\S*)\s*$")
_SHELLS = ("sh", "bash", "shell", "console")


@dataclass(frozen=True)
class Runbook:
    name: str
    path: Path
    title: str
    summary: str

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def commands(self) -> list[tuple[int, str]]:
        """(line number, command line) of every ``drsvc`` command in the runbook's ``sh`` blocks."""
        return commands_in(self.text)

    def document(self, *, text: bool = False) -> dict[str, str]:
        doc = {"name": self.name, "title": self.title, "summary": self.summary, "path": str(self.path)}
        if text:
            doc["text"] = self.text
        return doc


def runbook_dir() -> Path:
    """The directory holding the runbooks (see module docstring for the search order)."""
    override = os.environ.get("DRSVC_RUNBOOKS")
    if override:
        return Path(override)
    return data.path("runbooks")


def _parse(path: Path) -> Runbook:
    title, summary_lines = path.stem, list[str]()
    seen_title = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if not seen_title:
            if line.startswith("# "):
                title, seen_title = line[2:].strip(), True
            continue
        if line.strip():
            if line.startswith(("#", "```", "|", "-", ">")):
                if summary_lines:
                    break
                continue
            summary_lines.append(line.strip())
        elif summary_lines:
            break
    return Runbook(path.stem, path, title, " ".join(summary_lines))


def runbooks(directory: Path | None = None) -> list[Runbook]:
    """Every runbook, by name."""
    directory = directory or runbook_dir()
    if not directory.is_dir():
        return []
    return [_parse(p) for p in sorted(directory.glob("*.md")) if p.name.lower() != "readme.md"]


def find(name: str, directory: Path | None = None) -> Runbook:
    """The runbook called ``name`` (``ransomware`` or ``ransomware.md``); NotFound lists the known ones."""
    wanted = name.removesuffix(".md")
    books = runbooks(directory)
    for book in books:
        if book.name == wanted:
            return book
    close = [b.name for b in books if wanted in b.name]
    known = ", ".join(b.name for b in books) or f"none found in {directory or runbook_dir()}"
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise NotFound(f"no runbook {name!r}{hint}; known: {known}")


def commands_in(markdown: str) -> list[tuple[int, str]]:
    """``drsvc`` command lines of the fenced ``sh``/``bash``/``console`` blocks, continuations joined.

    A leading ``$ `` prompt is removed; other shell commands (``ceph``, ``aws``) are skipped, except
    for ``drsvc`` commands they run (``xargs -I{} drsvc restore {}``, ``sh -c 'drsvc ...'``).
    """
    found: list[tuple[int, str]] = []
    block: str | None = None  # the language of the fenced block we are in, "" for none given
    pending: tuple[int, str] | None = None
    for number, line in enumerate(markdown.splitlines(), start=1):
        fence = _FENCE.match(line.strip())
        if fence:
            block = fence.group(1) if block is None else None
            pending = None
            continue
        if block not in _SHELLS:
            continue
        text = line.strip()
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text
            pending = None
        if text.endswith("\\"):
            pending = (number, text[:-1].rstrip())
            continue
        text = text.removeprefix("$ ")
        if text.split(" ", 1)[0] == "drsvc":
            found.append((number, text))
        else:
            found.extend((number, inner) for inner in _embedded(text))
    return found


def _embedded(line: str) -> list[str]:
    """``drsvc`` commands inside another command: ``xargs ... drsvc restore {}``, ``sh -c 'drsvc ...'``."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    found = []
    for i, word in enumerate(words):
        if word == "drsvc":
            found.append(shlex.join(words[i:]))
            break
        if word.startswith("drsvc "):
            found.append(word)
    return found


def argv(command_line: str) -> list[str]:
    """The arguments after ``drsvc`` of a runbook command line, up to a pipe, redirect or ``&&``.

    ``drsvc --json points list alice | jq .`` -> ``["--json", "points", "list", "alice"]``.
    """
    lexer = shlex.shlex(command_line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for token in lexer:
        if token and all(c in "();<>|&" for c in token):
            break
        words.append(token)
    if not words or words[0] != "drsvc":
        raise ValueError(f"not a drsvc command: {command_line!r}")
    return words[1:]
