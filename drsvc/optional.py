"""Optional libraries: imported where they are used, with the extra that installs them when missing.

The core install (``pip install drsvc``) backs up, tiers, restores and drills on RADOS + S3 with
Podman. Heavier client libraries come with extras, and a command that needs a missing one fails
with exit 1 and a message naming it: ``pip install 'drsvc[report]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from drsvc.errors import MissingDependency

__all__ = ["EXTRAS", "require"]

# extra -> (what it is for, the distributions it installs); pyproject.toml's
# [project.optional-dependencies] is the source of truth, a unit test keeps the two in step.
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "report": ("the quarterly report's HTML, PDF and Markdown editions", ("jinja2", "matplotlib", "weasyprint")),
    "kubernetes": ("the crio:// runtime and the Kubernetes executor", ("kubernetes",)),
    "docker": ("the docker:// runtime", ("docker",)),
    "mount": ("drsvc mount (FUSE; also needs Debian's fuse3)", ("mfusepy",)),
}


def hint(extra: str) -> str:
    """The install command for ``extra``."""
    return f"pip install 'drsvc[{extra}]'"


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise ``MissingDependency`` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        what, library = purpose or EXTRAS[extra][0], module.split(".")[0]
        raise MissingDependency(f"{what} needs {library}, which is not installed ({e}): {hint(extra)}") from None
