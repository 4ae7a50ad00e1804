"""Volumes chosen by URL scheme: where a desktop's persistent data lives.

``open_volume("rados://desktops/desk-001")`` returns a ``Volume`` (one RADOS namespace; snapshots
are pool snapshots shared by the pool's volumes). A backend is one module exposing
``from_url(url: str, **options) -> Volume``; it becomes available by registering its scheme,
lazily by dotted name (built-ins below, so ``import rados`` happens only on use) or with a factory
callable (add-ons, tests): ``register_volume_scheme("mem", MemVolume.from_url)``. Opening a volume
does not contact the backend: a malformed URL fails fast with ``InvalidInput`` naming it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from drsvc.errors import InvalidInput
from drsvc.volumes.base import (
    READ_SIZE,
    ObjectHasher,
    ObjectStream,
    PoolSnapshots,
    SnapshotInfo,
    Volume,
    VolumeObject,
    digest_streams,
    object_digest,
)

__all__ = [
    "READ_SIZE",
    "ObjectHasher",
    "ObjectStream",
    "PoolSnapshots",
    "SnapshotInfo",
    "Volume",
    "VolumeObject",
    "digest_streams",
    "object_digest",
    "open_snapshots",
    "open_volume",
    "register_volume_scheme",
    "registered_volume_schemes",
]

VolumeFactory = Callable[..., Volume]

_REGISTRY: dict[str, VolumeFactory | str] = {}
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")


def register_volume_scheme(scheme: str, factory: VolumeFactory | str) -> None:
    """Make ``scheme://…`` volume URLs open with ``factory(url, **options)`` (or ``"module:attr"``)."""
    _REGISTRY[scheme.lower()] = factory


def registered_volume_schemes() -> list[str]:
    """Schemes ``open_volume`` understands, sorted."""
    return sorted(_REGISTRY)


def open_volume(url: str, **options: Any) -> Volume:
    """Open the volume a URL names; unknown schemes and bad URLs raise ``InvalidInput`` naming the URL."""
    m = _SCHEME.match(url or "")
    known = ", ".join(f"{s}://" for s in registered_volume_schemes())
    if not m:
        raise InvalidInput(f"malformed volume URL {url!r}: expected SCHEME://… ({known})")
    scheme = m.group(1)
    factory = _REGISTRY.get(scheme)
    if factory is None:
        raise InvalidInput(f"unknown volume URL scheme {scheme!r} in {url!r}; known: {known}")
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            raise InvalidInput(f"volume URL {url!r}: the {scheme}:// backend ({module_name}) is not installed") from e
        factory = getattr(module, attr or "from_url")
        _REGISTRY[scheme] = factory
    return factory(url, **options)


def open_snapshots(scope: str, **options: Any) -> PoolSnapshots:
    """The snapshots of a scope as ``Volume.scope`` names it (``rados://POOL``), e.g. for prune."""
    m = _SCHEME.match(scope or "")
    if not m or m.group(1) not in _REGISTRY:
        raise InvalidInput(f"unknown snapshot scope {scope!r}")
    module_name = _REGISTRY[m.group(1)]
    module = importlib.import_module(
        module_name.partition(":")[0] if isinstance(module_name, str) else module_name.__module__
    )
    return module.snapshots_from_scope(scope, **options)


# Built-ins register exactly the way an add-on would (lazily: `import rados` happens on first use).
register_volume_scheme("rados", "drsvc.volumes.rados:from_url")
