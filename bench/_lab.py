"""What every bench script sets up before it imports drsvc, in one place.

A script in bench/ starts with ``import _lab`` (Python puts bench/ on ``sys.path`` when it runs one
of them; sibling benches import each other the same way). That puts this checkout first on
``sys.path`` (a bench measures the tree it sits in, not whatever drsvc is installed), tests/ (the
fault and fleet kits) after it, and the lab's librados shim (Debian's python3-rados, which a venv
does not see) last, only when ``rados`` is not importable already.

The lab's settings come from ``eval "$(dev/lab env)"``; :func:`env` names that step when one is
missing, instead of a KeyError deep inside a run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))
if importlib.util.find_spec("rados") is None:  # find_spec: --help should not load librados
    sys.path.append(os.environ.get("DRSVC_LAB_PYSHIM", "/var/lib/drsvc-lab/pyshim"))

MiB = 1 << 20
DRSVC = str(ROOT / ".venv" / "bin" / "drsvc")
ENDPOINT = os.environ.get("S3_ENDPOINT_URL", "http://127.0.0.1:7480")


def byte_compile(tree: Path) -> None:
    """Byte-compile the drsvc package in ``tree``, as installing drsvc (a wheel, the Debian package) does.

    Where PYTHONDONTWRITEBYTECODE is set (this lab's machine sets it), a source tree is otherwise
    compiled again by every drsvc command a bench runs (~0.1 s each), a cost no installed drsvc pays.
    """
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "drsvc")], check=True, capture_output=True)


byte_compile(ROOT)


def reference_tool(name: str, package: str | None = None) -> str:
    """The path of the reference tool ``name`` (restic), installed with apt when missing.

    The benches print drsvc's numbers beside a reference tool's on the same data in the same run,
    so a bench without it has nothing to compare with. The lab installs what it needs the same
    way (as root, Debian's package); without root it exits naming the command to run.
    """
    found = shutil.which(name)
    if found:
        return found
    package = package or name
    if os.geteuid() != 0:
        raise SystemExit(f"{name} is the reference and is not installed: run `apt-get install -y {package}` as root")
    print(f"[bench] installing {package} (the reference tool) with apt", flush=True)
    for step in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]):
        done = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", *step[1:]], capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SystemExit(f"`{' '.join(step)}` failed ({tail[0]}): install {package} and run the bench again")
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"apt installed {package} but {name} is not on PATH")
    return found


def env(name: str) -> str:
    """The lab setting ``name`` from the environment, or exit naming how to get it."""
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f'{name} is not set: run `eval "$(dev/lab env)"` first (the lab must be up)')
    return value


def config_text(*, hot: str | None = None, cold: str | None = None, runtime: bool = False, scope: str = "") -> str:
    """A drsvc.toml for the lab: catalog and key file beside it, the given stores, Podman when ``runtime``.

    Callers append their own sections (scheduler, timeouts, sites) to the text.
    """
    text = '[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n'
    if scope:
        text += f'scope = "{scope}"\n'
    if hot:
        text += f'[hot]\nstore = "{hot}"\nceph_conf = "{env("CEPH_CONF")}"\n'
    if cold:
        text += f'[cold]\nstore = "{cold}"\nendpoint_url = "{ENDPOINT}"\n'
    if runtime:
        text += f'[runtime]\nurl = "podman://{env("DRSVC_PODMAN_SOCKET")}"\n'
    return text


def run(*cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing its output; a non-zero exit raises with the end of its stderr."""
    p = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}: exit {p.returncode}: {p.stderr[-2000:]}")
    return p


def purge_namespaces(namespaces: list[str], pool: str = "desktops", timeout: float = 300) -> None:
    """Remove every object of these namespaces of ``pool`` (``dev/fleet.py purge``); best effort,
    as a bench's clean-up of the shared lab."""
    desks = [a for d in namespaces for a in ("--desktop", d)]
    cmd = ["/usr/bin/python3", str(ROOT / "dev" / "fleet.py"), "purge", "--conf", env("CEPH_CONF"), "--pool", pool]
    subprocess.run([*cmd, *desks], capture_output=True, timeout=timeout)


def show_medians(title: str, rows: dict[str, list[dict[str, float]]], keys: tuple[str, ...], width: int = 34) -> None:
    """Print one line per row name: for each key, the median of its rounds and every round's value."""
    import statistics

    print(f"\n{title}")
    for what, runs in rows.items():
        cells = []
        for key in keys:
            values = [r[key] for r in runs if key in r]
            if values:
                each = "/".join(f"{v:.2f}" for v in values)
                cells.append(f"{key} {statistics.median(values):.2f} ({each})")
        print(f"  {what:<{width}} " + "   ".join(cells))
