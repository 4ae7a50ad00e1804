"""``drsvc tier`` does not import the backup path (freeze, runtimes, volume capture): start-up cost (issue 19).

Timing is for bench/incremental.py; this checks the cause: what the tier command's module imports.
"""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = "import json, sys, drsvc.cli.tier_cmd; print(json.dumps(sorted(sys.modules)))"
BACKUP_PATH = ("drsvc.backup", "drsvc.backup_commit", "drsvc.runtimes", "drsvc.volume_capture")


def test_tier_command_imports_no_backup_machinery() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    modules = set(json.loads(done.stdout))
    assert "drsvc.tiering" in modules  # the probe imported the real command
    assert "drsvc.point_manifest" in modules
    assert not {m for m in modules if m.startswith(BACKUP_PATH)}


def test_backup_keeps_exporting_the_manifest_helpers() -> None:
    from drsvc import backup, backup_commit, point_manifest

    assert backup.IMAGES is backup_commit.IMAGES is point_manifest.IMAGES
    assert backup.chunk_objects is point_manifest.chunk_objects
    assert backup.image_record_id is point_manifest.image_record_id
