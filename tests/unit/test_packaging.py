"""Packaging: the data a wheel must carry is inside the package, extras are declared and named.

The wheel itself is built and installed outside the checkout by ``dev/wheel-smoke`` (run by CI);
these tests keep the checkout honest without building anything.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

import drsvc
from drsvc import data, optional
from drsvc.catalog import migrations
from drsvc.errors import EXIT_FAILED, MissingDependency
from drsvc.runbooks import runbook_dir
from drsvc.runtimes.freeze import hook_source

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_shipped_data_is_inside_the_package() -> None:
    package = Path(drsvc.__file__).resolve().parent
    assert data.path().resolve() == package / "data"
    assert [m.version for m in migrations()] == list(range(1, len(migrations()) + 1))
    assert all(package / "data" / "migrations" in m.path.parents for m in migrations())
    assert hook_source() == data.path("criu", "drsvc-freeze-hook")
    assert runbook_dir() == data.path("runbooks")
    examples = sorted(p.name for p in data.path("policies").glob("*.yaml"))
    assert examples == ["executive.yaml", "lab.yaml", "standard.yaml"]


def test_package_data_globs_cover_every_shipped_file() -> None:
    """A file added under drsvc/data/ but not matched by package-data would be missing from the wheel."""
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["drsvc.data"]
    root = data.path()
    shipped = {p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".py"}
    covered = {p for g in globs for p in root.glob(g)}
    assert shipped - covered == set()


def test_no_migrations_outside_the_package() -> None:
    """Migrations added at the old place (catalog/ at the top) would never be applied."""
    assert not list(REPO.glob("catalog/*.sql"))


def test_checkout_paths_lead_to_the_shipped_files() -> None:
    for link, target in (("runbooks", "runbooks"), ("policies", "policies"), ("deploy/criu", "criu")):
        assert (REPO / link).resolve() == data.path(target).resolve(), link


def test_runbook_override_still_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DRSVC_RUNBOOKS", str(tmp_path))
    assert runbook_dir() == tmp_path


def test_version_lives_in_one_place() -> None:
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "drsvc.__version__"}


def test_build_floor_and_python_range() -> None:
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]  # license = "SPDX" (PEP 639)
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_extras_match_the_table_the_errors_quote() -> None:
    declared = PYPROJECT["project"]["optional-dependencies"]
    for extra, (_, dists) in optional.EXTRAS.items():
        names = {req.split(">")[0].split("[")[0].lower() for req in declared[extra]}
        assert names == set(dists), extra
    (everything,) = declared["all"]
    assert set(everything.removeprefix("drsvc[").removesuffix("]").split(",")) == set(optional.EXTRAS)
    core = {req.split(">")[0].lower() for req in PYPROJECT["project"]["dependencies"]}
    assert not core & {d for _, dists in optional.EXTRAS.values() for d in dists}


@pytest.mark.parametrize(
    ("module", "extra"), [("docker", "docker"), ("kubernetes.client", "kubernetes"), ("matplotlib", "report")]
)
def test_a_missing_extra_is_named_in_the_error(monkeypatch, module, extra) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    with pytest.raises(MissingDependency) as e:
        optional.require(module, extra)
    assert f"pip install 'drsvc[{extra}]'" in str(e.value)
    assert e.value.exit_code == EXIT_FAILED


def test_docker_runtime_without_the_sdk_says_which_extra(monkeypatch) -> None:
    from drsvc.runtimes.docker import DockerRuntime

    monkeypatch.setitem(sys.modules, "docker", None)
    with pytest.raises(MissingDependency, match=r"drsvc\[docker\]"):
        _ = DockerRuntime("/nonexistent.sock").api


def test_report_rendering_without_jinja_says_which_extra(monkeypatch) -> None:
    from drsvc.report import render

    monkeypatch.setitem(sys.modules, "jinja2", None)
    monkeypatch.setitem(sys.modules, "markupsafe", None)  # comes with Jinja2: missing together
    for fmt in ("md", "html"):
        with pytest.raises(MissingDependency, match=r"drsvc\[report\]"):
            render({"quarter": {"name": "2026Q1"}}, fmt)
