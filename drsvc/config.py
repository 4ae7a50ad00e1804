"""The service configuration (TOML): where the catalog, keys, stores, runtime and policies are.

Looked up in this order: ``--config PATH``, ``$DRSVC_CONFIG``, ``./drsvc.toml``,
``/etc/drsvc/drsvc.toml``. Relative paths inside the file are relative to the file's directory,
so a config next to its policies and key works wherever it is started from. Validation happens at
load: unknown keys, malformed URLs and missing files are errors that name the key path.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drsvc.errors import ConfigError

SEARCH_PATH = (Path("drsvc.toml"), Path("/etc/drsvc/drsvc.toml"))

STORE_SCHEMES = ("rados", "s3", "file")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        raise ValueError(f"{value!r} is not a URL with scheme {' | '.join(s + '://' for s in schemes)}")
    if not (parsed.netloc or parsed.path.strip("/")):
        raise ValueError(f"{value!r} names no pool, bucket, directory or socket")
    return value


class CatalogSection(_Section):
    path: Path = Field(description="SQLite catalog file")


class KeysSection(_Section):
    file: Path = Field(description="Key file (32 random bytes, hex); never stored beside the data")
    scope: Literal["tenant", "fleet"] = Field(
        default="tenant",
        description=(
            "tenant: a data key per tenant, wrapped by the key file's key and stored in the stores (dedup "
            "within a tenant); fleet: the key file's key for every desktop (single-tenant installations)"
        ),
    )


class HotSection(_Section):
    store: str = Field(description="Hot chunk store, e.g. rados://drsvc-hot")
    ceph_conf: Path | None = Field(default=None, description="ceph.conf (default: $CEPH_CONF)")

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        return _check_url(v, STORE_SCHEMES)


class ColdSection(_Section):
    store: str = Field(description="Cold chunk store, e.g. s3://bucket/prefix")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (default: $S3_ENDPOINT_URL / AWS)")
    region: str | None = None
    object_lock: bool = Field(
        default=False, description="Create the bucket with S3 Object Lock (needed for policies' object_lock_days)"
    )
    pack_mib: int = Field(
        default=16, ge=1, le=512, description="Chunks are stored in packs of about this size (MiB), one request each"
    )
    zstd_level: int = Field(
        default=4,
        ge=1,
        le=19,
        description="zstd level of the cold tier's frames of compressible chunks: 4 keeps tiering fast; "
        "7 stores text ~3 % smaller for ~4x the compression CPU",
    )

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        return _check_url(v, STORE_SCHEMES)


class RuntimeSection(_Section):
    url: str = Field(description="Container runtime, e.g. podman:///run/podman/podman.sock")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        # the registry decides (built-ins podman, docker, crio register as an add-on would)
        from drsvc.runtimes import registered_runtimes

        return _check_url(v, tuple(registered_runtimes()))


class SchedulerSection(_Section):
    workers: int = Field(default=2, ge=1, le=64, description="Desktops captured in parallel")
    retries: int = Field(default=2, ge=0, le=10, description="Retries per desktop, with backoff")
    lease_seconds: int = Field(default=900, ge=30, description="Lease lifetime; renewed while working")
    executor: Literal["local", "kubernetes"] = "local"
    gc_grace_seconds: int = Field(
        default=3600, ge=0, description="An unreferenced chunk is deleted only after this long unreferenced"
    )


class TimeoutsSection(_Section):
    """How long any one call to Ceph or S3 may take before drsvc gives up on it (never forever)."""

    ceph_seconds: float = Field(
        default=30, gt=0, le=3600, description="Every librados op (rados_osd_op_timeout, rados_mon_op_timeout)"
    )
    ceph_connect_seconds: float = Field(default=15, gt=0, le=3600, description="Connecting to the Ceph cluster")
    s3_connect_seconds: float = Field(default=10, gt=0, le=3600, description="Opening a connection to the S3 endpoint")
    s3_read_seconds: float = Field(
        default=30, gt=0, le=3600, description="Waiting for the S3 endpoint's next bytes (per read, not per object)"
    )
    s3_attempts: int = Field(default=3, ge=1, le=20, description="Attempts per S3 request (retries with backoff)")


NotifyEvent = Literal["backup_failed", "rpo_breach", "drill_failed", "verify_failed", "restore_interrupted"]
NOTIFY_EVENTS: tuple[str, ...] = get_args(NotifyEvent)


class WebhookSection(_Section):
    """One webhook: where notifications are POSTed and in which shape."""

    url: str = Field(description="http(s) URL the notifications are POSTed to")
    format: Literal["json", "slack"] = Field(
        default="json", description="json: drsvc's own document; slack: {text} for Slack-compatible incoming webhooks"
    )
    events: list[NotifyEvent] | None = Field(default=None, description="Only these kinds (default: every kind)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if urlparse(v).scheme not in ("http", "https") or not urlparse(v).netloc:
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v


class NotifySection(_Section):
    """Webhook notifications of failures and missed objectives (drsvc/notify.py)."""

    webhooks: list[WebhookSection] = Field(default_factory=list)
    attempts: int = Field(default=4, ge=1, le=10, description="Tries per delivery in one tick (backoff doubling)")
    backoff_seconds: float = Field(default=1.0, ge=0, le=60, description="Wait before the first retry")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="Deadline of one HTTP request")


class Config(_Section):
    """A validated configuration; ``path`` is the file it came from."""

    path: Path
    policies_dir: Path
    catalog: CatalogSection
    keys: KeysSection
    hot: HotSection | None = None
    cold: ColdSection | None = None
    runtime: RuntimeSection | None = None
    scheduler: SchedulerSection = SchedulerSection()
    notify: NotifySection = NotifySection()
    timeouts: TimeoutsSection = TimeoutsSection()


def find_config(explicit: Path | None) -> Path:
    """The config file to use, following the documented search order."""
    if explicit is not None:
        return explicit
    env = os.environ.get("DRSVC_CONFIG")
    if env:
        return Path(env)
    for candidate in SEARCH_PATH:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "no configuration found: pass --config PATH, set DRSVC_CONFIG, or create one with "
        "'drsvc init --config drsvc.toml'"
    )


def load_config(explicit: Path | None = None, *, check_files: bool = True) -> Config:
    """Find, parse and validate the configuration; every problem names its key path."""
    path = find_config(explicit)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return parse_config(raw, path, check_files=check_files)


def parse_config(raw: dict[str, Any], path: Path, *, check_files: bool = True) -> Config:
    base = path.resolve().parent
    raw = _resolve_paths(raw, base)
    raw.setdefault("policies_dir", str(base / "policies"))
    try:
        config = Config(path=path, **raw)
    except ValidationError as e:
        details = [f"{path}: {_loc(err['loc'])}: {_why(err)}" for err in e.errors()]
        raise ConfigError(f"{path}: invalid configuration", details=details) from None
    if not check_files:
        return config
    details = [f"{path}: {key}: {why}" for key, why in _missing_files(config)]
    if details:
        raise ConfigError(f"{path}: invalid configuration", details=details)
    return config


_PATH_KEYS = {("policies_dir",), ("catalog", "path"), ("keys", "file"), ("hot", "ceph_conf")}


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for key_path in _PATH_KEYS:
        holder: Any = out
        for part in key_path[:-1]:
            holder = holder.get(part) if isinstance(holder, dict) else None
        last = key_path[-1]
        if isinstance(holder, dict) and isinstance(holder.get(last), str):
            holder[last] = str((base / os.path.expanduser(holder[last])).resolve())
    return out


def _missing_files(config: Config) -> list[tuple[str, str]]:
    problems = []
    if not config.policies_dir.is_dir():
        problems.append(("policies_dir", f"directory {config.policies_dir} does not exist"))
    if not config.keys.file.is_file():
        problems.append(("keys.file", f"key file {config.keys.file} does not exist (drsvc init creates one)"))
    if config.hot and config.hot.ceph_conf and not config.hot.ceph_conf.is_file():
        problems.append(("hot.ceph_conf", f"file {config.hot.ceph_conf} does not exist"))
    if not config.catalog.path.parent.is_dir():
        problems.append(("catalog.path", f"directory {config.catalog.path.parent} does not exist"))
    return problems


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _why(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    return str(err["msg"]).removeprefix("Value error, ")
