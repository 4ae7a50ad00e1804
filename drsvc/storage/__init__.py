"""Object stores chosen by URL scheme.

``open_store("file:///var/lib/drsvc/store")``, ``open_store("rados://drsvc-hot/chunks")``,
``open_store("s3://bucket/prefix")``. A backend is one module exposing
``from_url(url: str, **options) -> ObjectStore``; it becomes available by registering its scheme,
either lazily by dotted name (built-ins below, so heavy client libraries load only when used) or
with a factory callable (add-ons, tests): ``register_scheme("mem", MemStore.from_url)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drsvc.registry import Registry
from drsvc.storage.base import ObjectStore, StoreBase, check_key, check_prefix, ordered_map

__all__ = [
    "ObjectStore",
    "StoreBase",
    "check_key",
    "check_prefix",
    "open_store",
    "ordered_map",
    "register_scheme",
    "registered_schemes",
]

Factory = Callable[..., ObjectStore]

_REGISTRY: Registry[ObjectStore] = Registry("store")


def register_scheme(scheme: str, factory: Factory | str) -> None:
    """Open ``scheme://…`` URLs with ``factory(url, **options)`` or a lazily imported ``"module:attr"``."""
    _REGISTRY.register(scheme, factory)


def registered_schemes() -> list[str]:
    """Schemes ``open_store`` understands, sorted."""
    return _REGISTRY.schemes()


def open_store(url: str, **options: Any) -> ObjectStore:
    """Open the object store a URL names; unknown schemes and malformed URLs raise ``InvalidInput``."""
    return _REGISTRY.open(url, **options)


# Built-ins register exactly the way an add-on would (lazily, so `import rados`/boto3 happen on use).
register_scheme("file", "drsvc.storage.file:from_url")
register_scheme("rados", "drsvc.storage.rados:from_url")
register_scheme("s3", "drsvc.storage.s3:from_url")
