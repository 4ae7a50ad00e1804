"""The contract suite covers the documented contract: every README command x every exit code it
documents has a test that asserts it (``@contract(COMMAND, CODE)`` in tests/contract).

Documented = 0 for every command, every "exit N" in the command's README row and in its
``--help`` text (and its subcommands'), and the codes the CLI contract promises for specific
failures (a failing desktop among several is 6 for backup, drill and tier; restore's missed
target is 5). A new "exit N" in the README or in a help text fails this test until a contract
test asserts it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import click
import pytest
from contractlib import assert_exit, contract

from drsvc.cli import COMMANDS, load

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"
EXIT = re.compile(r"\bexit(?:s| code)? ([0-6])\b")

# failures the contract names for these commands even where no help text spells out the code
PROMISED: dict[str, set[int]] = {
    "backup": {2, 3, 6},
    "restore": {2, 3, 5},
    "drill": {3, 6},
    "tier": {6},
    "verify": {4},
}


def readme_rows() -> dict[str, str]:
    """command -> its row in the README's command table."""
    rows: dict[str, str] = {}
    lines = README.read_text().splitlines()
    start = lines.index("| command | what it does |")
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        m = re.match(r"^\| `([a-z-]+)[^`]*` \|", line)
        if m:
            rows.setdefault(m.group(1), "")
            rows[m.group(1)] += line
    return rows


def help_text(command: click.Command) -> str:
    """The command's own help (and its subcommands'), without the exit-code table every help ends with."""
    texts = [command.help or ""]
    if isinstance(command, click.Group):
        texts += [help_text(sub) for sub in command.commands.values()]
    return "\n".join(texts)


def documented(name: str) -> set[int]:
    codes = {0} | PROMISED.get(name, set())
    codes |= {int(c) for c in EXIT.findall(readme_rows().get(name, ""))}
    codes |= {int(c) for c in EXIT.findall(help_text(load(name)))}
    return codes


def asserted() -> dict[str, set[int]]:
    """command -> codes some contract test declares (read from the test modules, not this session)."""
    out: dict[str, set[int]] = {}
    for path in sorted(HERE.glob("test_contract_*.py")):
        spec = importlib.util.spec_from_file_location(f"_contract_{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for item in vars(module).values():
            for mark in getattr(item, "pytestmark", []):
                if mark.name == "exit_code":
                    out.setdefault(mark.args[0], set()).add(mark.args[1])
    return out


def test_every_readme_command_is_a_command() -> None:
    assert set(readme_rows()) == set(COMMANDS), "README's command table and the CLI's commands differ"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_documented_exit_code_is_asserted(name: str) -> None:
    missing = documented(name) - asserted().get(name, set())
    assert not missing, f"drsvc {name}: documented exit code(s) {sorted(missing)} asserted by no contract test"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_malformed_command_line_is_invalid_input(name: str, run_cli) -> None:  # type: ignore[no-untyped-def]
    assert_exit(run_cli(name, "--no-such-option"), 2, "No such option")


# the usage-error test above stands for exit 2 of every command
for _name in COMMANDS:
    test_a_malformed_command_line_is_invalid_input = contract(_name, 2)(test_a_malformed_command_line_is_invalid_input)
