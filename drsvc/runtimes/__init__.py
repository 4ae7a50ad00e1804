"""Container runtimes chosen by URL scheme.

``open_runtime("podman:///run/podman/podman.sock")`` (later ``crio://NODE``, ``docker:///var/run/docker.sock``).
A runtime backend is one module exposing ``from_url(url: str, **options) -> ContainerRuntime``; it
becomes available by registering its scheme, lazily by dotted name (built-ins below, so client
libraries load only when used) or with a factory callable (add-ons, tests):
``register_runtime("fake", FakeRuntime.from_url)``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from drsvc.errors import InvalidInput
from drsvc.runtimes.base import (
    LABEL_DESKTOP,
    LABEL_TENANT,
    LABEL_VOLUME,
    ContainerRuntime,
    DesktopRef,
    desktop_from_labels,
)

__all__ = [
    "LABEL_DESKTOP",
    "LABEL_TENANT",
    "LABEL_VOLUME",
    "ContainerRuntime",
    "DesktopRef",
    "desktop_from_labels",
    "open_runtime",
    "register_runtime",
    "registered_runtimes",
]

Factory = Callable[..., ContainerRuntime]

_REGISTRY: dict[str, Factory | str] = {}
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")


def register_runtime(scheme: str, factory: Factory | str) -> None:
    """Make ``scheme://…`` URLs open with ``factory(url, **options)`` (or lazily, ``"module:attr"``)."""
    _REGISTRY[scheme.lower()] = factory


def registered_runtimes() -> list[str]:
    """Schemes ``open_runtime`` understands, sorted."""
    return sorted(_REGISTRY)


def open_runtime(url: str, **options: Any) -> ContainerRuntime:
    """Open the runtime a URL names; unknown schemes and malformed URLs raise ``InvalidInput``."""
    m = _SCHEME.match(url or "")
    if not m:
        raise InvalidInput(f"malformed runtime URL {url!r}: expected SCHEME://… ({', '.join(registered_runtimes())})")
    scheme = m.group(1)
    factory = _REGISTRY.get(scheme)
    if factory is None:
        raise InvalidInput(
            f"unknown runtime URL scheme {scheme!r} in {url!r}; known: {', '.join(registered_runtimes())}"
        )
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            raise InvalidInput(f"runtime URL {url!r}: the {scheme}:// backend ({module_name}) is not installed") from e
        factory = getattr(module, attr or "from_url")
        _REGISTRY[scheme] = factory
    return factory(url, **options)


# Built-ins register exactly the way an add-on would (lazily: nothing is imported until used).
register_runtime("podman", "drsvc.runtimes.podman:from_url")
register_runtime("crio", "drsvc.runtimes.crio:from_url")
register_runtime("docker", "drsvc.runtimes.docker:from_url")
