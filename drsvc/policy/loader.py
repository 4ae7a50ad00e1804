"""Loading policy files: expand files and directories, parse YAML (duplicate keys rejected),
validate each file into a ``Policy`` and turn every problem into a ``"<file>: <field path>: <why>"``
line. ``load_policies`` is all or nothing: a complete ``PolicySet`` or one ``PolicyError``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import (
    ValidationError,
)
from pydantic_core import ErrorDetails

from drsvc.errors import PolicyError
from drsvc.policy.model import Policy
from drsvc.policy.policyset import PolicySet

POLICY_SUFFIXES = (".yaml", ".yml")


def policy_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Expand files and directories (``*.yaml`` / ``*.yml`` in them, sorted) -> (files, errors)."""
    files: list[Path] = []
    errors: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(f"{path}: no such file or directory")
    unique = list(dict.fromkeys(files))
    return unique, errors


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # unhashable key: SafeLoader reports it below
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_error(file: Path, e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        what = " ".join(p for p in (e.problem, e.context and f"({e.context})") if p)
        return f"{file}: line {e.problem_mark.line + 1}: {what or 'invalid YAML'}"
    return f"{file}: invalid YAML: {e}"


def _model_of(annotation: Any) -> type | None:
    if isinstance(annotation, type) and hasattr(annotation, "__pydantic_fields__"):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _known_fields(parent: Sequence[int | str]) -> list[str]:
    """Field names of the model at ``parent`` (a pydantic error location) in ``Policy``."""
    cls: type | None = Policy
    for part in parent:
        fields = getattr(cls, "__pydantic_fields__", {})
        if part not in fields:
            return []
        cls = _model_of(fields[part].annotation)
    return list(getattr(cls, "__pydantic_fields__", {}))


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _why(error: ErrorDetails) -> str:
    kind = error["type"]
    loc = error["loc"]
    value = error.get("input")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        known = _known_fields(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        if close:
            return f"unknown field (did you mean {close[0]!r}?)"
        return f"unknown field (known: {', '.join(known)})" if known else "unknown field"
    if kind == "missing":
        return "required field missing"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
        close = difflib.get_close_matches(str(value).upper(), expected, n=1) or difflib.get_close_matches(
            str(value), expected, n=1
        )
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"must be one of {', '.join(expected)}, got {value!r}{hint}"
    if kind in ("model_type", "dict_type", "dataclass_type", "model_attributes_type"):
        return f"must be a mapping (key: value), got {type(value).__name__} {value!r}"
    if kind == "bool_type":
        return f"must be true or false, got {value!r}"
    msg = error["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind in ("string_type", "list_type", "int_type"):
        msg = f"{msg[0].lower()}{msg[1:]}, got {value!r}"
    return msg


def _validation_errors(file: Path, e: ValidationError) -> list[str]:
    return [f"{file}: {_loc(err['loc'])}: {_why(err)}" for err in e.errors()]


def load_policies(paths: Iterable[str | Path]) -> PolicySet:
    """Load and validate every policy under ``paths`` (files or directories), all or nothing.

    Raises ``PolicyError`` listing every problem in every file (``"<file>: <field>: <why>"``);
    otherwise returns the complete set, with warnings (e.g. RPO shorter than the schedule allows).
    """
    files, errors = policy_files(paths)
    policies: dict[str, Policy] = {}
    sources: dict[str, Path] = {}
    for file in files:
        try:
            raw = yaml.load(file.read_text(encoding="utf-8"), Loader=_Loader)
        except yaml.YAMLError as e:
            errors.append(_yaml_error(file, e))
            continue
        except (OSError, UnicodeDecodeError) as e:
            errors.append(f"{file}: cannot read: {e}")
            continue
        if raw is None:
            errors.append(f"{file}: (top level): file is empty; expected a mapping with name, selector, schedule, ...")
            continue
        if not isinstance(raw, dict):
            errors.append(f"{file}: (top level): must be a mapping (key: value), got {type(raw).__name__}")
            continue
        try:
            policy = Policy.model_validate(raw)
        except ValidationError as e:
            errors.extend(_validation_errors(file, e))
            continue
        if policy.name in policies:
            errors.append(f"{file}: name: policy {policy.name!r} is already defined in {sources[policy.name]}")
            continue
        policies[policy.name] = policy
        sources[policy.name] = file
    if errors:
        count = len(errors)
        raise PolicyError(
            f"{count} problem{'s' if count != 1 else ''} in policy files; nothing was loaded", details=errors
        )
    return PolicySet(policies=policies, sources=sources, files=tuple(files))
