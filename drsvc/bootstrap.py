"""``drsvc init``: write a commented starter config wired to what this machine has.

What it looks for: ``CEPH_CONF`` (RADOS hot store and ``rados://`` volumes), ``S3_ENDPOINT_URL``
or ``AWS_*`` (S3 cold store), a Podman socket (``CONTAINER_HOST``, ``DRSVC_PODMAN_SOCKET``,
``/run/podman/podman.sock``) or a Docker socket (``DOCKER_HOST``, ``/var/run/docker.sock``).
Idempotent: an existing config, key or catalog is kept, never overwritten.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from drsvc import data
from drsvc.catalog import Catalog
from drsvc.config import load_config
from drsvc.crypto import generate_key_file

SHIPPED_POLICIES = data.path("policies")


@dataclass
class InitResult:
    config: Path
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    found: dict[str, str] = field(default_factory=dict)


def detect() -> dict[str, str]:
    """What this machine offers, as config values (only what was found)."""
    found: dict[str, str] = {}
    if os.environ.get("CEPH_CONF"):
        found["ceph_conf"] = os.environ["CEPH_CONF"]
        found["hot_store"] = "rados://drsvc-hot"
    if os.environ.get("S3_ENDPOINT_URL") or os.environ.get("AWS_ACCESS_KEY_ID"):
        found["cold_store"] = "s3://drsvc-cold/fleet"
        if os.environ.get("S3_ENDPOINT_URL"):
            found["s3_endpoint"] = os.environ["S3_ENDPOINT_URL"]
    for candidate in (
        os.environ.get("DRSVC_PODMAN_SOCKET", ""),
        os.environ.get("CONTAINER_HOST", "").removeprefix("unix://"),
        "/run/podman/podman.sock",
    ):
        if candidate and Path(candidate).exists():
            found["runtime"] = f"podman://{candidate}"
            break
    else:
        docker = os.environ.get("DOCKER_HOST", "").removeprefix("unix://") or "/var/run/docker.sock"
        if Path(docker).exists():
            found["runtime"] = f"docker://{docker}"
    return found


def render_config(config_path: Path, policies_dir: Path, found: dict[str, str]) -> str:
    """The starter config text: every section commented, found values filled in."""
    base = config_path.resolve().parent
    state = Path("/var/lib/drsvc") if base == Path("/etc/drsvc") else base

    def section(name: str, key: str, body: str, hint: str) -> str:
        if key in found:
            return f"[{name}]\n{body}\n"
        commented = "\n".join("# " + line for line in f"[{name}]\n{body}".splitlines())
        return f"# ({hint})\n{commented}\n"

    hot = section(
        "hot",
        "hot_store",
        f'store = "{found.get("hot_store", "rados://drsvc-hot")}"     # chunk store in a RADOS pool\n'
        f'ceph_conf = "{found.get("ceph_conf", "/etc/ceph/ceph.conf")}"\n'
        "# chunk_kib = 128   # average chunk size of a new store (set before the first backup; a store keeps its own)",
        "no CEPH_CONF found: uncomment and point at your cluster",
    )
    cold_body = f'store = "{found.get("cold_store", "s3://drsvc-cold/fleet")}"   # S3 bucket/prefix'
    cold_body += (
        f'\nendpoint_url = "{found["s3_endpoint"]}"'
        if "s3_endpoint" in found
        else ('\n# endpoint_url = "https://s3.example.net"   # default: $S3_ENDPOINT_URL or AWS')
    )
    cold_body += "\n# credentials come from the standard AWS environment / profile, never from this file"
    cold = section("cold", "cold_store", cold_body, "no S3 endpoint or AWS credentials found")
    runtime = section(
        "runtime",
        "runtime",
        f'url = "{found.get("runtime", "podman:///run/podman/podman.sock")}"',
        "no Podman or Docker socket found",
    )
    return f"""\
# drsvc configuration, written by `drsvc init`.
# Relative paths are relative to this file. Validate with: drsvc --config {config_path.name} policy check

# Policy files (YAML, one policy each): which desktops, when, how long to keep, objectives.
policies_dir = "{os.path.relpath(policies_dir.resolve(), base)}"

[catalog]
# SQLite record of every desktop, point, job, tier move and drill (rebuildable from the stores).
path = "{os.path.relpath(state / "catalog.db", base) if state == base else state / "catalog.db"}"

[keys]
# 32-byte key (hex) that wraps each tenant's data key (stored in the stores) and seals the stores.
# Keep a copy OFF this host: without it no point can be restored. Never store it beside the data.
# Mode 0600 (or 0400), owned by the user running drsvc, not a symlink.
file = "drsvc.key"
# tenant: a data key per tenant (dedup within a tenant); fleet: this key for every desktop.
scope = "tenant"

{hot}
{cold}
{runtime}
[scheduler]
workers = 2           # desktops captured in parallel
retries = 2           # per desktop, with exponential backoff
lease_seconds = 900   # scheduler lease; renewed while a run works
executor = "local"    # or "kubernetes": one Job per node
"""


def init(config_path: Path, policies_dir: Path | None = None) -> InitResult:
    """Create config, key, policies dir and catalog where missing; keep whatever exists."""
    result = InitResult(config=config_path)
    result.found = detect()
    base = config_path.resolve().parent
    base.mkdir(parents=True, exist_ok=True)
    if config_path.exists():
        result.kept.append(str(config_path))
    else:
        policies = policies_dir or base / "policies"
        if not policies.exists():
            policies.mkdir(parents=True)
            for shipped in sorted(SHIPPED_POLICIES.glob("*.yaml")):
                shutil.copy(shipped, policies / shipped.name)
            result.created.append(f"{policies}/ (example policies)")
        config_path.write_text(render_config(config_path, policies, result.found))
        result.created.append(str(config_path))
    config = load_config(config_path, check_files=False)
    if config.keys.file.exists():
        result.kept.append(str(config.keys.file))
    else:
        generate_key_file(config.keys.file)
        result.created.append(str(config.keys.file))
    existed = config.catalog.path.exists()
    config.catalog.path.parent.mkdir(parents=True, exist_ok=True)
    Catalog.open(config.catalog.path).close()
    (result.kept if existed else result.created).append(str(config.catalog.path))
    load_config(config_path)  # the full check, so init never leaves a config that fails later
    return result
