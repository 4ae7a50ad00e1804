"""Names the tier job and cold prune share with other jobs (rebuild, offsite copies): where a
point's manifest lives, the storage class of metadata objects, the event callback type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drsvc.chunks import MANIFESTS_PREFIX

Event = Callable[..., None]
META_CLASS = "STANDARD"  # manifests, image records: see the module docstring


def _quiet(*_args: Any, **_kw: Any) -> None:
    return None


def manifest_key(desktop: str, point_id: str) -> str:
    """Object key of a point's (or an image record's) manifest."""
    return f"{MANIFESTS_PREFIX}{desktop}/{point_id}"
