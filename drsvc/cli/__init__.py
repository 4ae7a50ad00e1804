"""The command line: one module per command, each thin (parse, call one job, render, exit code).

Every command module exposes one click command or group; ``_MODULES`` is the registry the entry
point adds (``commands()``) to the ``drsvc`` group, in the order ``drsvc --help`` lists them.
"""

from __future__ import annotations

import importlib

import click

_MODULES = [
    "init_cmd",
    "policy_cmd",
    "desktops_cmd",
    "run_cmd",
    "backup_cmd",
    "restore_cmd",
    "drill_cmd",
    "points_cmd",
    "prune_cmd",
    "tier_cmd",
    "verify_cmd",
    "catalog_cmd",
    "report_cmd",
    "runbook_cmd",
]


def commands() -> list[click.Command]:
    """Import every command module (on first use, so importing drsvc.cli stays cheap)."""
    commands = []
    for name in _MODULES:
        module = importlib.import_module(f"drsvc.cli.{name}")
        commands.append(module.command)
    return commands
