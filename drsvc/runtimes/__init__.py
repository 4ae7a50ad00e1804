"""Container runtimes chosen by URL scheme.

``open_runtime("podman:///run/podman/podman.sock")`` (later ``crio://NODE``, ``docker:///var/run/docker.sock``).
A runtime backend is one module exposing ``from_url(url: str, **options) -> ContainerRuntime``; it
becomes available by registering its scheme, lazily by dotted name (built-ins below, so client
libraries load only when used) or with a factory callable (add-ons, tests):
``register_runtime("fake", FakeRuntime.from_url)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drsvc.registry import Registry
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

_REGISTRY: Registry[ContainerRuntime] = Registry("runtime")


def register_runtime(scheme: str, factory: Factory | str) -> None:
    """Make ``scheme://…`` URLs open with ``factory(url, **options)`` (or lazily, ``"module:attr"``)."""
    _REGISTRY.register(scheme, factory)


def registered_runtimes() -> list[str]:
    """Schemes ``open_runtime`` understands, sorted."""
    return _REGISTRY.schemes()


def open_runtime(url: str, **options: Any) -> ContainerRuntime:
    """Open the runtime a URL names; unknown schemes and malformed URLs raise ``InvalidInput``."""
    return _REGISTRY.open(url, **options)


# Built-ins register exactly the way an add-on would (lazily: nothing is imported until used).
register_runtime("podman", "drsvc.runtimes.podman:from_url")
register_runtime("crio", "drsvc.runtimes.crio:from_url")
register_runtime("docker", "drsvc.runtimes.docker:from_url")
