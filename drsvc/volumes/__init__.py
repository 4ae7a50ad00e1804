"""Volumes chosen by URL scheme: where a desktop's persistent data lives.

``open_volume("rados://desktops/desk-001")`` returns a ``Volume`` (one RADOS namespace; snapshots
are pool snapshots shared by the pool's volumes). A backend is one module exposing
``from_url(url: str, **options) -> Volume``; it becomes available by registering its scheme,
lazily by dotted name (built-ins below, so ``import rados`` happens only on use) or with a factory
callable (add-ons, tests): ``register_volume_scheme("mem", MemVolume.from_url)``. Opening a volume
does not contact the backend: a malformed URL fails fast with ``InvalidInput`` naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drsvc.registry import Registry
from drsvc.volumes.base import (
    DIGEST_FORM,
    READ_SIZE,
    ObjectHasher,
    ObjectStream,
    PoolSnapshots,
    SnapshotInfo,
    Volume,
    VolumeObject,
    digest_form,
    digest_streams,
    object_digest,
)

__all__ = [
    "DIGEST_FORM",
    "READ_SIZE",
    "ObjectHasher",
    "ObjectStream",
    "PoolSnapshots",
    "SnapshotInfo",
    "Volume",
    "VolumeObject",
    "digest_form",
    "digest_streams",
    "object_digest",
    "open_snapshots",
    "open_volume",
    "register_volume_scheme",
    "registered_volume_schemes",
]

VolumeFactory = Callable[..., Volume]

_REGISTRY: Registry[Volume] = Registry("volume")


def register_volume_scheme(scheme: str, factory: VolumeFactory | str) -> None:
    """Make ``scheme://…`` volume URLs open with ``factory(url, **options)`` (or ``"module:attr"``)."""
    _REGISTRY.register(scheme, factory)


def registered_volume_schemes() -> list[str]:
    """Schemes ``open_volume`` understands, sorted."""
    return _REGISTRY.schemes()


def open_volume(url: str, **options: Any) -> Volume:
    """Open the volume a URL names; unknown schemes and bad URLs raise ``InvalidInput`` naming the URL."""
    return _REGISTRY.open(url, **options)


def open_snapshots(scope: str, **options: Any) -> PoolSnapshots:
    """The snapshots of a scope as ``Volume.scope`` names it (``rados://POOL``), e.g. for prune."""
    return _REGISTRY.module_of(scope).snapshots_from_scope(scope, **options)


# Built-ins register exactly the way an add-on would (lazily: `import rados` happens on first use).
register_volume_scheme("rados", "drsvc.volumes.rados:from_url")
