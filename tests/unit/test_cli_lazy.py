"""The CLI imports a command's module only when that command runs (start-up cost, issue 19).

Timing is for bench/startup.py; these tests check the cause: what ``drsvc --help`` imports.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from drsvc.cli import COMMANDS, load

# rich, sqlite3 and logging are imported when a command prints, opens the catalog or logs
HEAVY = (
    "rich",
    "sqlite3",
    "logging",
    "sqlite_utils",
    "pydantic",
    "boto3",
    "botocore",
    "numpy",
    "matplotlib",
    "jinja2",
    "croniter",
    "yaml",
)

_PROBE = """
import json, sys
from drsvc.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _imported(*argv: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=False)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_registry_help_line_is_the_commands_own(name: str) -> None:
    command = load(name)
    assert command.name == name
    assert COMMANDS[name][1] == command.get_short_help_str(limit=1000)


def test_help_imports_no_command_and_no_heavy_library() -> None:
    modules = _imported("--help")
    assert "drsvc.cli.main" in modules  # the probe ran the real entry point
    assert not {m for m in modules if m.startswith("drsvc.cli.") and m.endswith("_cmd")}
    assert not {m for m in modules if m.split(".")[0] in HEAVY}


def test_a_command_imports_its_own_module_only() -> None:
    modules = _imported("runbook", "--help")
    assert {m for m in modules if m.startswith("drsvc.cli.") and m.endswith("_cmd")} == {"drsvc.cli.runbook_cmd"}


def test_backup_help_loads_no_job() -> None:
    """``drsvc backup`` loads its job (and the chunk store under it) only once it has desktops to back
    up, so it can open the hot store on a thread while those modules load."""
    modules = _imported("backup", "--help")
    assert "drsvc.cli.backup_cmd" in modules
    assert not {"drsvc.backup", "drsvc.backup_commit", "drsvc.chunks", "drsvc.cleanup"} & modules
