"""``drsvc`` with the fake runtime and volumes registered: the real entry point in a child process.

    python tests/fakes/drsvc_cli.py [drsvc arguments...]     ($DRSVC_FAKE_WORLD names the world)

Only the host probe for the CRIU freeze hook is replaced, by the world's setting (the fake
runtime plays the hook); everything else is ``drsvc.cli.main.main`` as installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (for `fakes`)

from fakes.desktops import WORLD_ENV, register

import drsvc.backup
from drsvc.cli.main import main

if __name__ == "__main__":
    world = register(os.environ[WORLD_ENV])
    drsvc.backup.hook_installed = lambda *_a: world.hook_installed  # type: ignore[assignment]
    main(sys.argv[1:])
