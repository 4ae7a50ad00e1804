"""The wheel, installed outside the checkout, works on the lab: init, policy check, backup, restore.

The wheel is built from this tree and installed (core only, no extras) into a fresh venv in a
temporary directory that can see Debian's librados binding but not the checkout. Everything then
runs from that directory through the installed `drsvc` script: the schema, runbooks, example
policies and freeze hook must come from inside the package, and a missing extra must be named.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DRSVC_CONFIG")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv outside the checkout with the wheel built from this tree; returns its bin/drsvc."""
    root = tmp_path_factory.mktemp("wheel")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(root / "dist"), str(REPO)], root)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (root / "dist").glob("drsvc-*.whl")
    base = getattr(sys, "_base_executable", sys.executable)
    venv = root / "venv"
    assert _run([base, "-m", "venv", str(venv)], root).returncode == 0
    pip = _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], root)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    # Debian's librados binding (python3-rados), as dev/setup links it: only the extension modules
    site = _run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"], root)
    for so in glob.glob("/usr/lib/python3/dist-packages/rados.cpython-311-*.so"):
        os.symlink(so, Path(site.stdout.strip()) / Path(so).name)
    return venv / "bin" / "drsvc"


def test_the_installed_wheel_carries_its_data_and_names_missing_extras(installed, tmp_path) -> None:
    where = _run([str(installed.parent / "python"), "-c", "import drsvc; print(drsvc.__file__)"], tmp_path)
    assert str(REPO) not in where.stdout and "site-packages" in where.stdout, where.stdout
    version = _run([str(installed), "--version"], tmp_path)
    assert version.returncode == 0 and re.match(r"drsvc, version \d", version.stdout), version.stdout
    books = _run([str(installed), "runbook", "list"], tmp_path)
    assert books.returncode == 0 and "ransomware" in books.stdout, books.stdout + books.stderr
    # no [report] extra in this venv: the report command says which extra to install
    (tmp_path / "policies").mkdir()
    cfg = tmp_path / "drsvc.toml"
    init = _run([str(installed), "--config", str(cfg), "init"], tmp_path)
    assert init.returncode == 0, init.stdout + init.stderr
    report = _run([str(installed), "--config", str(cfg), "report", "--quarter", "2026Q1", "-o", "r.html"], tmp_path)
    assert report.returncode == 1 and "pip install 'drsvc[report]'" in report.stderr, report.stderr


def test_init_policy_check_backup_and_restore_from_the_wheel(installed, tmp_path, make_fleet, lab) -> None:
    from envkit import DrsvcEnv

    [desktop] = make_fleet(1)
    cfg = tmp_path / "drsvc.toml"

    def drsvc(*args: str) -> subprocess.CompletedProcess[str]:
        return _run([str(installed), "--config", str(cfg), *args], tmp_path)

    init = drsvc("init")
    assert init.returncode == 0, init.stdout + init.stderr
    assert sorted(p.name for p in (tmp_path / "policies").glob("*.yaml")) == [
        "executive.yaml",
        "lab.yaml",
        "standard.yaml",
    ]
    hot = f"rados://drsvc-hot/wheel{uuid.uuid4().hex[:8]}"  # this test's own corner of the shared pool
    text = cfg.read_text()
    text = re.sub(r'(?m)^store = "rados://[^"]*"', f'store = "{hot}"', text)
    text = re.sub(r'(?m)^store = "s3://[^"]*"', f'store = "s3://drsvc-cold/wheel{uuid.uuid4().hex[:8]}"', text)
    cfg.write_text(text)
    env = DrsvcEnv(tmp_path, hot, lambda *a: None)
    try:
        check = drsvc("policy", "check")
        assert check.returncode == 0 and "OK  3 policies in 3 files" in check.stdout, check.stdout + check.stderr
        assert drsvc("desktops", "discover").returncode == 0
        backup = drsvc("--json", "backup", desktop)
        assert backup.returncode == 0, backup.stdout[-3000:] + backup.stderr[-3000:]
        clone = f"{desktop}-wheel"
        restore = drsvc("restore", desktop, "--as", clone)
        assert restore.returncode in (0, 5), restore.stdout[-3000:] + restore.stderr[-3000:]
        state = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Running}}", clone], capture_output=True, text=True, timeout=60
        )
        assert state.stdout.strip() == "true", state.stderr
    finally:
        env.cleanup()
