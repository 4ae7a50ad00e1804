"""Other sites: the ``[sites.NAME]`` sections of the config, and what it takes to reach one.

A site is another S3 store (its own endpoint, region, bucket/prefix and credentials) that holds
copies of recovery points (``drsvc copy``) and from which a whole site can be recovered
(``drsvc site recover``). This module turns a site section into store options (credentials are
read from where the section says, never from the config itself, and never logged), names an
unknown site clearly, and moves a desktop's volume URL to the pool a recovery site restores into.
"""

from __future__ import annotations

import configparser
import difflib
import os
from pathlib import Path
from typing import Any

from drsvc.config import Config, SiteSection, TimeoutsSection
from drsvc.errors import ConfigError, DrsvcError, NotFound


class SiteUnreachable(DrsvcError):
    """A site's S3 endpoint does not answer, refuses the credentials or lacks the bucket."""


def site_section(config: Config, name: str) -> SiteSection:
    """The config section of site ``name``; ``NotFound`` (exit 3) lists the configured sites."""
    try:
        return config.sites[name]
    except KeyError:
        known = ", ".join(sorted(config.sites)) or "none"
        close = difflib.get_close_matches(name, list(config.sites), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise NotFound(f"no site named {name!r} in {config.path}{hint}; configured sites: {known}") from None


def credentials(name: str, site: SiteSection) -> dict[str, str]:
    """S3Store options for the site's credentials source (empty: the standard AWS chain)."""
    if not site.credentials:
        return {}
    kind, _, arg = site.credentials.partition(":")
    where = f"sites.{name}.credentials"
    if kind == "profile":
        return {"profile": arg}
    if kind == "env":
        key, secret = os.environ.get(f"{arg}_ACCESS_KEY_ID"), os.environ.get(f"{arg}_SECRET_ACCESS_KEY")
        if not key or not secret:
            raise ConfigError(f"{where}: {arg}_ACCESS_KEY_ID and {arg}_SECRET_ACCESS_KEY must both be set")
        return {"access_key": key, "secret_key": secret}
    path = Path(arg)
    parser = configparser.ConfigParser()
    try:
        parser.read_string(path.read_text())
    except (OSError, configparser.Error) as e:
        raise ConfigError(f"{where}: cannot read {path}: {type(e).__name__}") from None
    section = parser["default"] if parser.has_section("default") else None
    if section is None or not section.get("aws_access_key_id") or not section.get("aws_secret_access_key"):
        raise ConfigError(f"{where}: {path} needs a [default] section with aws_access_key_id and aws_secret_access_key")
    return {"access_key": section["aws_access_key_id"], "secret_key": section["aws_secret_access_key"]}


def store_options(name: str, site: SiteSection, *, create: bool, timeouts: TimeoutsSection) -> dict[str, Any]:
    """Every option ``open_store(site.store, ...)`` needs for this site (timeouts as for the cold tier)."""
    options: dict[str, Any] = {
        "create": create,
        "connect_timeout": timeouts.s3_connect_seconds,
        "read_timeout": timeouts.s3_read_seconds,
        "max_attempts": timeouts.s3_attempts,
        **credentials(name, site),
    }
    if site.endpoint_url:
        options["endpoint_url"] = site.endpoint_url
    if site.region:
        options["region"] = site.region
    if site.object_lock:
        options["object_lock"] = True
    return options


def unreachable(name: str, site: SiteSection, error: DrsvcError) -> SiteUnreachable:
    """One clear line for a site that cannot be used, naming what to check."""
    where = site.endpoint_url or "the AWS endpoint"
    return SiteUnreachable(
        f"site {name} ({site.store} at {where}) cannot be used: {error.message.splitlines()[0]} "
        f"(check [sites.{name}] endpoint_url, credentials and the network)"
    )


def relocate_volume(url: str, restore_pool: str | None) -> str:
    """``rados://POOL/NS`` moved to the recovery site's pool (same namespace); unchanged without one."""
    if not restore_pool or not url.startswith("rados://"):
        return url
    namespace = url[len("rados://") :].partition("/")[2]
    return f"{restore_pool.rstrip('/')}/{namespace}" if namespace else url
