"""Shared fixtures: run the real CLI entry point in-process and capture what a user would see."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from drsvc.cli.main import main

# Hypothesis fails an example that takes over 200 ms by default: an upper bound on time that a
# loaded machine (CI on two cores, other work beside) breaks without any bug. Tests assert
# behaviour; speed is for bench/.
settings.register_profile("drsvc", deadline=None)
settings.load_profile("drsvc")


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def output(self) -> str:
        """For assertion messages: the exit code and both streams (a --json error is on stdout).

        A string, because pytest shows a message that is not one through a repr cut to 240 characters.
        """
        return f"exit {self.code}\n--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"


@pytest.fixture
def deploy(tmp_path: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A whole drsvc deployment on the FAKE runtime and volumes (tests/deployment.py)."""
    from deployment import deployment

    with deployment(tmp_path, run_cli, monkeypatch) as d:
        yield d


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run ``drsvc ARGS...`` through ``drsvc.cli.main.main`` and return exit code and output."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


@pytest.fixture
def fleet(tmp_path):
    """A real catalog with one policy (tests/fleetkit.py), filled by the test."""
    from fleetkit import Fleet

    kit = Fleet(tmp_path)
    yield kit
    kit.catalog.close()
