"""Object names from a manifest as relative paths: one mapping for ``--to-dir`` and the mount.

A RADOS object name is any string; a manifest is hostile. ``parts(name)`` splits a name on ``/``
into path components that are always safe to join beneath a root: ``%`` is written ``%25``, a
character that is not printable (a newline, an escape, a bidi override, a byte that was not
UTF-8) as its UTF-8 bytes (``%0A``), and a component that is empty, ``.`` or ``..``, holds a
NUL, or is longer than a file name may be is percent-encoded whole (``..`` → ``%2E%2E``), so no
component can leave the directory it is joined to and distinct names give distinct paths (a
component too long for a file name keeps a head and a 128-bit hash of the whole; two names on
one path are refused, never merged). When an object's path is also a directory of other objects
(``a`` and ``a/b``), the object takes a name
ending in a lone ``%`` (``a%``), which encoding never produces.

``Tree`` is the directory tree of a set of names (the mount's view). ``write_beneath`` creates a
file under a directory file descriptor one component at a time with ``O_NOFOLLOW``, so a symlink
already planted under the target directory cannot redirect the write.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from drsvc.errors import DrsvcError, InvalidInput

NAME_MAX = 255  # bytes in one path component (Linux)
FILE_SUFFIX = "%"  # an object whose path is also a directory

T = TypeVar("T")


def _encode_all(component: str) -> str:
    return "".join(f"%{b:02X}" for b in component.encode("utf-8", "surrogateescape"))


def _encode_char(ch: str) -> str:
    try:  # a byte that was not UTF-8 (surrogateescape) stands for itself
        return "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # another lone surrogate: by its code point ("%u" is never a byte)
        return f"%u{ord(ch):04X}"


def component(raw: str) -> str:
    """One safe path component for ``raw`` (a piece of a name between slashes)."""
    if raw in ("", ".", "..") or "\0" in raw:
        return _encode_all(raw) or "%"  # "" → a lone %: an empty piece (a//b, a trailing /)
    safe = raw.replace("%", "%25")
    if not safe.isprintable():  # a newline in a host file name, an escape sequence for `ls`
        safe = "".join(ch if ch.isprintable() else _encode_char(ch) for ch in safe)
    if len(safe.encode("utf-8", "surrogateescape")) > NAME_MAX:
        # too long for one component: keep a readable head and make the rest unique. 128 bits: a
        # tenant names its objects and can search for a collision (64 bits fell to ~2**32 tries)
        digest = hashlib.blake2b(raw.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
        head = safe.encode("utf-8", "surrogateescape")[: NAME_MAX - 36].decode("utf-8", "ignore")
        safe = f"{head}%~{digest}"
    return safe


def parts(name: str) -> list[str]:
    """The safe relative path of an object name, as components."""
    if name == "":
        return ["%"]
    return [component(p) for p in name.split("/")]


@dataclass
class Node(Generic[T]):
    """A directory of the tree: subdirectories and files (files carry a value, e.g. an object)."""

    dirs: dict[str, Node[T]] = field(default_factory=dict)
    files: dict[str, T] = field(default_factory=dict)


class Tree(Generic[T]):
    """The directory tree of named items; lookups by the safe path components."""

    def __init__(self, items: Iterable[tuple[str, T]]) -> None:
        self.root: Node[T] = Node()
        deferred: list[tuple[list[str], T]] = []
        named: dict[tuple[str, ...], str] = {}
        for name, value in items:
            path = parts(name)
            other = named.setdefault(tuple(path), name)
            if other != name:  # never silently one file for two objects (a hash collision)
                raise DrsvcError(
                    f"object names {other!r} and {name!r} map to the same path {'/'.join(path)!r}; "
                    "restore them into the namespace, not as files"
                )
            node = self.root
            for piece in path[:-1]:
                node = node.dirs.setdefault(piece, Node())
            deferred.append((path, value))
            node.files.setdefault(path[-1], value)
        # a name that is also a directory moves aside (a file "a" beside the directory of "a/b")
        for path, _ in deferred:
            parent = self.lookup_dir(path[:-1])
            if parent is not None and path[-1] in parent.dirs and path[-1] in parent.files:
                parent.files[path[-1] + FILE_SUFFIX] = parent.files.pop(path[-1])

    def lookup_dir(self, path: list[str]) -> Node[T] | None:
        node = self.root
        for piece in path:
            nxt = node.dirs.get(piece)
            if nxt is None:
                return None
            node = nxt
        return node

    def paths(self) -> Iterable[tuple[list[str], T]]:
        """Every file with its path components."""
        stack: list[tuple[list[str], Node[T]]] = [([], self.root)]
        while stack:
            prefix, node = stack.pop()
            for name, value in node.files.items():
                yield [*prefix, name], value
            for name, child in node.dirs.items():
                stack.append(([*prefix, name], child))


def write_beneath(root_fd: int, path: list[str], *, overwrite: bool, mode: int = 0o644) -> int:
    """Open ``path`` (safe components) for writing beneath ``root_fd``; return the file's fd.

    Directories are created as needed; no component may be a symlink (``O_NOFOLLOW``), so nothing
    outside ``root_fd`` can be reached. An existing file is replaced only with ``overwrite``.
    """
    for piece in path:
        if piece in ("", ".", "..") or "/" in piece or "\0" in piece:
            raise InvalidInput(f"unsafe path component {piece!r}")  # parts() never produces one
    dir_fd = os.dup(root_fd)
    try:
        for i, piece in enumerate(path[:-1]):
            try:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(piece, 0o755, dir_fd=dir_fd)
                nxt = os.open(piece, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as e:  # a file or a symlink where a directory should be
                raise InvalidInput(f"cannot make directory {'/'.join(path[: i + 1])}: {e.strerror}") from None
            os.close(dir_fd)
            dir_fd = nxt
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_TRUNC if overwrite else os.O_EXCL
        try:
            return os.open(path[-1], flags, mode, dir_fd=dir_fd)
        except FileExistsError:
            raise InvalidInput(f"{'/'.join(path)} exists; pass --overwrite to replace it") from None
        except OSError as e:
            raise InvalidInput(f"cannot write {'/'.join(path)}: {e.strerror}") from None
    finally:
        os.close(dir_fd)
