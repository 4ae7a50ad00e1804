"""Object stores chosen by URL scheme.

``open_store("file:///var/lib/drsvc/store")``, ``open_store("rados://drsvc-hot/chunks")``,
``open_store("s3://bucket/prefix")``. A backend is one module exposing
``from_url(url: str, **options) -> ObjectStore``; it becomes available by registering its scheme,
either lazily by dotted name (built-ins below, so heavy client libraries load only when used) or
with a factory callable (add-ons, tests): ``register_scheme("mem", MemStore.from_url)``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from drsvc.errors import InvalidInput
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

_REGISTRY: dict[str, Factory | str] = {}
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")


def register_scheme(scheme: str, factory: Factory | str) -> None:
    """Open ``scheme://…`` URLs with ``factory(url, **options)`` or a lazily imported ``"module:attr"``."""
    _REGISTRY[scheme.lower()] = factory


def registered_schemes() -> list[str]:
    """Schemes ``open_store`` understands, sorted."""
    return sorted(_REGISTRY)


def open_store(url: str, **options: Any) -> ObjectStore:
    """Open the object store a URL names; unknown schemes and malformed URLs raise ``InvalidInput``."""
    m = _SCHEME.match(url or "")
    if not m:
        raise InvalidInput(f"malformed store URL {url!r}: expected SCHEME://… ({', '.join(registered_schemes())})")
    scheme = m.group(1)
    factory = _REGISTRY.get(scheme)
    if factory is None:
        raise InvalidInput(f"unknown store URL scheme {scheme!r} in {url!r}; known: {', '.join(registered_schemes())}")
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            raise InvalidInput(f"store URL {url!r}: the {scheme}:// backend ({module_name}) is not installed") from e
        factory = getattr(module, attr or "from_url")
        _REGISTRY[scheme] = factory
    return factory(url, **options)


# Built-ins register exactly the way an add-on would (lazily, so `import rados`/boto3 happen on use).
register_scheme("file", "drsvc.storage.file:from_url")
register_scheme("rados", "drsvc.storage.rados:from_url")
register_scheme("s3", "drsvc.storage.s3:from_url")
