"""Files drsvc ships inside its package, found with ``importlib.resources``.

``migrations/NNN_name.sql`` (catalog schema), ``runbooks/*.md`` (incident runbooks),
``policies/*.yaml`` (example policies ``drsvc init`` copies) and ``criu/`` (the CRIU freeze hook and
the ``runc.conf`` line naming it). They live here, not beside the package, so a wheel carries them;
the checkout's top-level ``runbooks/``, ``policies/`` and ``deploy/criu/`` are symlinks to these
directories, for people reading the repository.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["path"]


def path(*parts: str) -> Path:
    """The on-disk path of a shipped file or directory, e.g. ``path("runbooks")``.

    pip always unpacks wheels, so the package data is a real directory; a zipped install (which
    drsvc does not support: CRIU and runc need the hook as a file) is refused here, not later.
    """
    root = files(__name__)
    if not isinstance(root, Path):
        raise RuntimeError(f"drsvc must be installed unpacked on disk (its data is in {root})")
    return root.joinpath(*parts)
