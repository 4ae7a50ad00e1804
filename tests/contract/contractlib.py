"""Helpers of the contract suite: ``@contract(COMMAND, CODE)`` and ``assert_exit``."""

from __future__ import annotations

from typing import Any

import pytest


def contract(command: str, code: int) -> pytest.MarkDecorator:
    """Mark a test as asserting that ``drsvc COMMAND`` exits ``code`` (see test_contract_coverage)."""
    return pytest.mark.exit_code(command, code)


def assert_exit(result: Any, code: int, *fragments: str, report: bool = False) -> None:
    """Exit ``code``, no traceback, every fragment in the output.

    An error (not ``report``, code not 0/5/6) must be exactly one ``drsvc: error:`` line holding
    every fragment; a job that ran and reports its outcome (``report``) says it in its output.
    """
    assert result.code == code, result.output
    assert "Traceback" not in result.stderr, result.output
    if report or code in (0, 5, 6):
        text = result.stdout + result.stderr
    else:
        # drsvc's own errors, or click's for a malformed command line ("Error: ...", after usage)
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith(("drsvc: error:", "Error: "))]
        assert len(errors) == 1, f"expected one 'drsvc: error:' line\n{result.output}"
        text = errors[0]
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in the output\n{result.output}"
