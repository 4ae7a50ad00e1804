"""Runbooks name only commands and options that exist, and ``drsvc runbook`` shows them.

Every ``drsvc ...`` line in every runbook's fenced ``sh`` blocks is split with shlex and walked
down the real click command tree: each word is a subcommand of the group it follows, each
``--option`` a declared option of the command it is given to (with a value when it takes one, of
the right type), and positional words fit the command's declared arguments. Placeholders such as
``DESKTOP`` or ``2026-11-27T02:00Z`` are fine as arguments; they are not checked further.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from drsvc.cli import commands
from drsvc.cli.main import cli
from drsvc.runbooks import argv, commands_in, runbook_dir, runbooks

EXPECTED = {
    "desktop-lost",
    "node-lost",
    "ceph-pool-lost",
    "ceph-unavailable",
    "s3-unavailable",
    "catalog-lost",
    "ransomware",
    "backups-failing",
    "site-lost",
}
SECTIONS = ("## Symptoms", "## Decision points", "## Verify", "## Report")


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    for command in commands():
        cli.add_command(command)


def _option(command: click.Command, name: str) -> click.Option | None:
    for param in command.params:
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    if name in ("-h", "--help"):
        return click.Option(["--help"], is_flag=True)
    return None


def check(args: list[str]) -> list[str]:
    """Problems with ``drsvc ARGS`` against the command tree; empty when it would parse."""
    command: click.Command = cli
    path = ["drsvc"]
    positionals: list[str] = []
    problems: list[str] = []
    words = list(args)
    while words:
        word = words.pop(0)
        if word == "--":
            positionals.extend(words)
            break
        if word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            option = _option(command, name)
            if option is None:
                problems.append(f"{' '.join(path)}: no option {name}")
                continue
            takes_value = not (option.is_flag or option.count)
            if takes_value and not eq:
                if not words:
                    problems.append(f"{' '.join(path)} {name}: needs a value")
                    continue
                value = words.pop(0)
            elif eq and not takes_value:
                problems.append(f"{' '.join(path)} {name}: is a flag, takes no value")
                continue
            if takes_value:
                try:
                    option.type.convert(value, option, None)
                except click.BadParameter as e:
                    problems.append(f"{' '.join(path)} {name} {value!r}: {e.message}")
            continue
        if isinstance(command, click.Group) and not positionals:
            sub = command.commands.get(word)
            if sub is None:
                problems.append(f"{' '.join(path)}: no command {word!r} (has: {', '.join(sorted(command.commands))})")
                return problems
            command, path = sub, [*path, word]
            continue
        positionals.append(word)
    if isinstance(command, click.Group):
        problems.append(f"{' '.join(path)}: a group, names no command")
        return problems
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    unlimited = any(a.nargs == -1 for a in arguments)
    most = sum(a.nargs for a in arguments if a.nargs > 0)
    least = sum(max(a.nargs, 1) for a in arguments if a.required)
    if not unlimited and len(positionals) > most:
        problems.append(f"{' '.join(path)}: takes {most} argument(s), given {positionals}")
    if len(positionals) < least:
        problems.append(f"{' '.join(path)}: needs {least} argument(s), given {positionals}")
    for param in command.params:
        if isinstance(param, click.Option) and param.required and not set(param.opts) & {a.split("=")[0] for a in args}:
            problems.append(f"{' '.join(path)}: missing required {param.opts[-1]}")
    return problems


def test_the_checker_catches_what_it_should():
    assert check(["restore", "alice", "--at", "2026-11-27T02:00Z", "--as", "alice-probe", "--dry-run"]) == []
    assert (
        check(["--json", "--config", "/etc/drsvc/drsvc.toml", "points", "list", "alice", "--status", "complete"]) == []
    )
    assert check(["restore", "alice", "--bogus"]) == ["drsvc restore: no option --bogus"]
    assert "no command 'nosuch'" in check(["nosuch"])[0]
    assert check(["catalog"]) == ["drsvc catalog: a group, names no command"]
    assert "takes 1 argument(s)" in check(["points", "show", "a", "b"])[0]
    assert "needs 1 argument(s)" in check(["points", "show"])[0]
    assert "needs a value" in check(["restore", "alice", "--at"])[0]
    assert "'sometimes'" in check(["points", "list", "--status", "sometimes"])[0]
    assert "missing required --quarter" in check(["report"])[0]
    assert argv("drsvc --json verify --all | jq . > out.json") == ["--json", "verify", "--all"]


def test_all_runbooks_exist_and_have_their_sections():
    books = {b.name: b for b in runbooks()}
    assert runbook_dir() == Path(__file__).resolve().parents[2] / "drsvc" / "data" / "runbooks"
    assert set(books) >= EXPECTED, f"missing runbooks: {EXPECTED - set(books)}"
    for name, book in books.items():
        text = book.text
        for section in SECTIONS:
            assert section in text, f"{name}: no {section!r} section"
        assert book.title and book.summary, f"{name}: needs a '# title' and a summary paragraph"
        assert len(book.commands()) >= 5, f"{name}: too few drsvc commands in sh blocks"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_runbook_commands_exist_with_their_options(name):
    book = next(b for b in runbooks() if b.name == name)
    problems = [f"{book.path.name}:{line}: {problem}" for line, cmd in book.commands() for problem in check(argv(cmd))]
    assert not problems, "\n".join(problems)


def test_ransomware_runbook_says_the_essentials():
    book = next(b for b in runbooks() if b.name == "ransomware")
    lines = [cmd for _, cmd in book.commands()]
    assert any("--read-data" in c and c.startswith("drsvc verify") for c in lines)
    assert any(c.startswith("drsvc restore") and "--at" in c for c in lines)
    assert not any(c.startswith("drsvc prune") for c in lines), "never prune during an incident"
    assert "Object Lock" in book.text


def test_commands_in_reads_only_shell_blocks():
    md = "\n".join(
        [
            "drsvc outside a block",
            "```text",
            "drsvc not a shell block",
            "```",
            "```sh",
            "# drsvc in a comment",
            "$ drsvc points list \\",
            "    alice --status complete",
            "ceph -s",
            "xargs -P 4 -I{} sh -c 'drsvc --json restore {} --force > {}.json; echo done' < affected.txt",
            "xargs -I{} drsvc restore {} --dry-run < affected.txt",
            "```",
        ]
    )
    found = commands_in(md)
    assert found[0] == (7, "drsvc points list alice --status complete")
    assert [argv(cmd) for _, cmd in found[1:]] == [
        ["--json", "restore", "{}", "--force"],
        ["restore", "{}", "--dry-run"],
    ]


def test_cli_runbook_list_and_show(run_cli):
    listed = run_cli("--json", "runbook", "list")
    assert listed.code == 0, listed.output
    assert {b["name"] for b in listed.json()} >= EXPECTED

    human = run_cli("runbook", "list")
    assert human.code == 0 and "ransomware" in human.stdout

    shown = run_cli("runbook", "show", "ransomware")
    assert shown.code == 0, shown.output
    assert "Ransomware" in shown.stdout and "drsvc verify" in shown.stdout

    doc = run_cli("--json", "runbook", "show", "node-lost.md").json()
    assert doc["name"] == "node-lost" and doc["text"].startswith("# Node lost")

    missing = run_cli("runbook", "show", "meteor-strike")
    assert missing.code == 3 and "ransomware" in missing.stderr
