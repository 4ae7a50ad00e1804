"""The container image: built offline by dev/image, and drsvc runs inside it.

dev/image debootstraps a Debian 12 base (once; it stays in Podman's storage), builds the wheel and
its dependencies' wheels on the host, and builds deploy/container/Containerfile with
--network=none. Inside, `drsvc --version`, `policy check` on the example policies and the librados
binding must work.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import drsvc

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "drsvc" / "data" / "policies"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image(lab) -> str:
    built = subprocess.run([str(REPO / "dev" / "image")], capture_output=True, text=True, timeout=1200, check=False)
    assert built.returncode == 0, built.stderr[-4000:]
    name = built.stdout.strip().splitlines()[-1]
    assert name == f"localhost/drsvc:{drsvc.__version__}"
    return name


def podman_run(image: str, *args: str, volumes: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    cmd = ["podman", "run", "--rm", "--pull=never", "--network=none"]
    for v in volumes:
        cmd += ["-v", v]
    return subprocess.run([*cmd, image, *args], capture_output=True, text=True, timeout=300, check=False)


def test_drsvc_version_inside_the_image(image) -> None:
    done = podman_run(image, "--version")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"drsvc, version {re.escape(drsvc.__version__)}\n", done.stdout)


def test_policy_check_inside_the_image(image) -> None:
    done = podman_run(image, "policy", "check", "/policies", volumes=(f"{POLICIES}:/policies:ro",))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK  3 policies in 3 files" in done.stdout


def test_the_image_has_debians_librados_and_the_shipped_data(image) -> None:
    probe = "import rados, sys; from drsvc import data; print(sys.version_info[:2], data.path('migrations').is_dir())"
    done = subprocess.run(
        ["podman", "run", "--rm", "--pull=never", "--network=none", "--entrypoint", "/opt/drsvc/bin/python", image,
         "-c", probe],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(3, 11) True"
    books = podman_run(image, "runbook", "list")
    assert books.returncode == 0 and "backups-failing" in books.stdout
