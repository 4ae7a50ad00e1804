"""The CLI contract suite: every README command x every exit code it documents, through the real
entry point (``drsvc.cli.main.main``), on a whole deployment whose runtime and volumes are the
FAKES of ``tests/fakes/desktops.py`` (``tests/deployment.py``). No lab needed; a few seconds.

Each test declares what it proves with ``@contract(COMMAND, CODE)``;
``test_contract_coverage.py`` fails when the README or a command's help documents an exit code
that no test asserts. Errors are checked for the contract's shape too: the code, one line
``drsvc: error: ...`` naming the problem, never a traceback.
"""

from __future__ import annotations

import pytest
from deployment import Deployment


@pytest.fixture
def fleet(deploy: Deployment) -> Deployment:
    """alice and bob (tenant acme, policy standard), discovered, each with one complete point."""
    deploy.desktop("alice", seed=1)
    deploy.desktop("bob", seed=2)
    r = deploy.cli("backup", "--policy", "standard")
    assert r.code == 0, r.output
    return deploy
