"""URL-scheme registries: how stores, volumes and runtimes find their backend.

A backend registers its scheme with a factory, or lazily with ``"module:attr"`` so heavy client
libraries (``rados``, boto3, the kubernetes client) are imported only when a URL needs them.
Built-ins register exactly the way an add-on would.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from drsvc.errors import InvalidInput

T = TypeVar("T")

_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")


class Registry(Generic[T]):
    """Schemes of one kind of backend (``kind`` names it in error messages: "store", "runtime")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T] | str] = {}

    def register(self, scheme: str, factory: Callable[..., T] | str) -> None:
        """Open ``scheme://…`` URLs with ``factory(url, **options)`` or a lazily imported ``"module:attr"``."""
        self._factories[scheme.lower()] = factory

    def unregister(self, scheme: str) -> None:
        """Forget a scheme (tests, add-ons being unloaded); unknown ones are fine."""
        self._factories.pop(scheme.lower(), None)

    def copy(self) -> Registry[T]:
        """An independent registry with the same schemes (tests that must not touch the real one)."""
        other: Registry[T] = Registry(self.kind)
        other._factories = dict(self._factories)
        return other

    def schemes(self) -> list[str]:
        """The schemes known, sorted."""
        return sorted(self._factories)

    def scheme_of(self, url: str) -> str:
        """The URL's scheme, if registered; ``InvalidInput`` naming the URL otherwise."""
        m = _SCHEME.match(url or "")
        known = ", ".join(f"{s}://" for s in self.schemes())
        if not m:
            raise InvalidInput(f"malformed {self.kind} URL {url!r}: expected SCHEME://… ({known})")
        if m.group(1) not in self._factories:
            raise InvalidInput(f"unknown {self.kind} URL scheme {m.group(1)!r} in {url!r}; known: {known}")
        return m.group(1)

    def module_of(self, url: str) -> Any:
        """The module a lazily registered scheme lives in (for backend-specific helpers)."""
        factory = self._factories[self.scheme_of(url)]
        name = factory.partition(":")[0] if isinstance(factory, str) else factory.__module__
        return importlib.import_module(name)

    def open(self, url: str, **options: Any) -> T:
        """Build the backend a URL names."""
        scheme = self.scheme_of(url)
        factory = self._factories[scheme]
        if isinstance(factory, str):
            module_name, _, attr = factory.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                if e.name != module_name:
                    raise
                raise InvalidInput(
                    f"{self.kind} URL {url!r}: the {scheme}:// backend ({module_name}) is not installed"
                ) from e
            factory = getattr(module, attr or "from_url")
            self._factories[scheme] = factory
        return factory(url, **options)
