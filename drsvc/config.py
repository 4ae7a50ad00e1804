"""The service configuration (TOML): where the catalog, keys, stores, runtime and policies are.

Looked up in this order: ``--config PATH``, ``$DRSVC_CONFIG``, ``./drsvc.toml``,
``/etc/drsvc/drsvc.toml``. Relative paths inside the file are relative to the file's directory,
so a config next to its policies and key works wherever it is started from. Validation happens at
load: unknown keys, malformed URLs and missing files are errors that name the key path.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drsvc.errors import ConfigError

SEARCH_PATH = (Path("drsvc.toml"), Path("/etc/drsvc/drsvc.toml"))

STORE_SCHEMES = ("rados", "s3", "file")
# [hot] chunk_kib: the bounds drsvc.chunks.cutter.AVG_KIB_RANGE enforces (not imported: loading a
# config must not import the chunk store; a unit test keeps the two equal)
CHUNK_KIB_RANGE = (16, 1024)


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
    zstd_level: int = Field(
        default=1,
        ge=-7,
        le=19,
        description="zstd level of hot chunks: 1 stores within 0.3 % of level 3 for ~2/3 of its CPU; "
        "the cold tier compresses its frames again at its own level",
    )
    chunk_kib: int = Field(
        default=128,
        description="Average chunk size (KiB, a power of two, 16-1024) of a NEW hot store, and of a cold store "
        "created from it (minimum a quarter, maximum 4x). A store keeps the size it was made with (its config); "
        "smaller chunks store less after small scattered writes and cost more objects and requests",
    )

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        return _check_url(v, STORE_SCHEMES)

    @field_validator("chunk_kib")
    @classmethod
    def _chunk_kib(cls, v: int) -> int:
        low, high = CHUNK_KIB_RANGE
        if not (low <= v <= high and v & (v - 1) == 0):
            raise ValueError(f"{v}: expected a power of two from {low} to {high} (KiB)")
        return v


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
    index_cache_mib: int = Field(
        default=256,
        ge=0,
        le=65536,
        description="Local cache of the cold store's pack indexes beside the catalog (<catalog>.cache/), "
        "checked on every load; 0: none (every run fetches every index)",
    )
    zstd_level: int = Field(
        default=4,
        ge=1,
        le=19,
        description="zstd level of the cold tier's frames of compressible chunks: 4 keeps tiering fast; "
        "7 stores text ~3 % smaller for ~4x the compression CPU",
    )
    recompress: bool = Field(
        default=True,
        description="Compress runs of compressible hot chunks again, in frames of 1-4 MiB at zstd_level; "
        "false: pack every hot chunk as the hot tier holds it (no zstd in tier: ~3 CPU s less per GiB, "
        "the cold store ~2.5 % larger, above restic's)",
    )

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        return _check_url(v, STORE_SCHEMES)


class RuntimeSection(_Section):
    url: str = Field(description="Container runtime, e.g. podman:///run/podman/podman.sock")
    checkpoint_dir: Path | None = Field(
        default=None,
        description="Where the runtime writes checkpoint images, for the free-space guard "
        "(default: what the runtime reports, e.g. Podman's container userdata directory)",
    )
    checkpoint_reserve_mib: int = Field(
        default=1024,
        ge=0,
        description="Free space kept on that disk beyond a checkpoint's expected image "
        "(2.5 x the desktop's memory); a desktop whose image would not fit is not checkpointed",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        # the registry decides (built-ins podman, docker, crio register as an add-on would)
        from drsvc.runtimes import registered_runtimes

        return _check_url(v, tuple(registered_runtimes()))


class SchedulerSection(_Section):
    workers: int = Field(default=2, ge=1, le=64, description="Desktops captured in parallel")
    pipeline: bool = Field(
        default=False,
        description="Store a batch while the next one freezes: faster fleets, longer freezes on a busy host",
    )
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


SITE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
SITE_STORAGE_CLASSES = Literal[
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER", "GLACIER_IR", "DEEP_ARCHIVE"
]


def _check_credentials(value: str | None) -> str | None:
    if value is None:
        return None
    kind, _, arg = value.partition(":")
    if kind not in ("env", "profile", "file") or not arg:
        raise ValueError(
            f"{value!r}: expected env:PREFIX (PREFIX_ACCESS_KEY_ID, PREFIX_SECRET_ACCESS_KEY), "
            "profile:NAME (an AWS profile) or file:PATH (an AWS credentials file)"
        )
    return value


class SiteSection(_Section):
    """Another site's S3 store: where ``drsvc copy`` puts copies and ``site recover`` reads them."""

    store: str = Field(description="The site's chunk store, s3://BUCKET[/PREFIX]")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint of the site (default: AWS)")
    region: str | None = None
    credentials: str | None = Field(
        default=None,
        description="env:PREFIX | profile:NAME | file:PATH (default: the standard AWS chain); never the secret itself",
    )
    storage_class: SITE_STORAGE_CLASSES = Field(default="STANDARD_IA", description="S3 class of copied packs")
    object_lock: bool = Field(default=False, description="The bucket has (or is created with) S3 Object Lock")
    object_lock_days: int | None = Field(
        default=None, ge=1, description="Lock copies this long unless the policy's site entry says otherwise"
    )
    restore_pool: str | None = Field(
        default=None,
        description="rados://POOL where desktops recovered at this site get their volumes (same namespaces)",
    )
    ceph_conf: Path | None = Field(default=None, description="ceph.conf of this site's Ceph (recovery only)")

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        _check_url(v, ("s3",))
        return v

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, v: str | None) -> str | None:
        return _check_credentials(v)

    @field_validator("restore_pool")
    @classmethod
    def _pool(cls, v: str | None) -> str | None:
        if v is not None:
            parsed = urlparse(v)
            if parsed.scheme != "rados" or not parsed.netloc or parsed.path.strip("/"):
                raise ValueError(f"{v!r}: expected rados://POOL (each desktop keeps its namespace)")
        return v


class RecoverySection(_Section):
    """Admission control of restore storms and site recovery: bounded work per shared resource."""

    parallel: int = Field(default=4, ge=1, le=256, description="Desktops in flight (--parallel overrides)")
    downloads: int = Field(default=3, ge=1, le=256, description="Desktops reading from the store at once")
    ceph_writes: int = Field(default=2, ge=1, le=256, description="Volumes written into Ceph at once")
    criu_per_host: int = Field(default=2, ge=1, le=64, description="CRIU restores at once on one host")


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
    sites: dict[str, SiteSection] = {}
    recovery: RecoverySection = RecoverySection()

    @field_validator("sites")
    @classmethod
    def _site_names(cls, v: dict[str, SiteSection]) -> dict[str, SiteSection]:
        for name in v:
            if not SITE_NAME.match(name):
                raise ValueError(f"site name {name!r}: lower-case letters, digits and '-' (max 32)")
        return v


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
        "'drsvc --config drsvc.toml init'"
    )


def load_config(explicit: Path | None = None, *, check_files: bool = True) -> Config:
    """Find, parse and validate the configuration; every problem names its key path."""
    path = find_config(explicit)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:  # a directory, or not readable by this user ($DRSVC_CONFIG is not checked by click)
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; a config is TOML (drsvc init writes one)") from None
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


def _resolve_site_paths(raw: dict[str, Any], base: Path) -> None:
    sites = raw.get("sites")
    if not isinstance(sites, dict):
        return
    raw["sites"] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in sites.items()}
    for site in raw["sites"].values():
        if isinstance(site, dict) and isinstance(site.get("ceph_conf"), str):
            site["ceph_conf"] = str((base / os.path.expanduser(site["ceph_conf"])).resolve())
        cred = site.get("credentials") if isinstance(site, dict) else None
        if isinstance(cred, str) and cred.startswith("file:"):
            site["credentials"] = "file:" + str((base / os.path.expanduser(cred[5:])).resolve())


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for key_path in _PATH_KEYS:
        holder: Any = out
        for part in key_path[:-1]:
            holder = holder.get(part) if isinstance(holder, dict) else None
        last = key_path[-1]
        if isinstance(holder, dict) and isinstance(holder.get(last), str):
            holder[last] = str((base / os.path.expanduser(holder[last])).resolve())
    _resolve_site_paths(out, base)
    return out


def _missing_files(config: Config) -> list[tuple[str, str]]:
    problems = []
    if not config.policies_dir.is_dir():
        problems.append(("policies_dir", f"directory {config.policies_dir} does not exist"))
    if not config.keys.file.is_file():
        problems.append(("keys.file", f"key file {config.keys.file} does not exist (drsvc init creates one)"))
    if config.hot and config.hot.ceph_conf and not config.hot.ceph_conf.is_file():
        problems.append(("hot.ceph_conf", f"file {config.hot.ceph_conf} does not exist"))
    for name, site in config.sites.items():
        if site.ceph_conf and not site.ceph_conf.is_file():
            problems.append((f"sites.{name}.ceph_conf", f"file {site.ceph_conf} does not exist"))
        if site.credentials and site.credentials.startswith("file:") and not Path(site.credentials[5:]).is_file():
            problems.append((f"sites.{name}.credentials", f"file {site.credentials[5:]} does not exist"))
    if not config.catalog.path.parent.is_dir():
        problems.append(("catalog.path", f"directory {config.catalog.path.parent} does not exist"))
    elif config.catalog.path.is_dir():
        problems.append(("catalog.path", f"{config.catalog.path} is a directory; name the catalog file in it"))
    return problems


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _why(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    return str(err["msg"]).removeprefix("Value error, ")
