"""Alert rules and the Grafana dashboard: checked by the real promtool, and named after real metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from drsvc import metrics
from drsvc.runbooks import runbooks

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "drsvc-alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "drsvc-alerts.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "drsvc.json"
# series drsvc_* names in PromQL that are not families themselves
SUFFIXES = ("_bucket", "_count", "_sum")


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("DRSVC_LAB_REQUIRED") == "1":
        pytest.fail("promtool is not installed (Debian package prometheus; dev/lab up installs it)")
    pytest.skip("promtool is not installed: apt-get install prometheus (dev/lab up does) to run the rule tests")


def exported_families(fleet) -> set[str]:
    """Every family drsvc exposes (catalog collector and daemon series), from a real scrape."""
    registry = metrics.registry(fleet.catalog.path, lambda: fleet.policies)
    metrics.DaemonMetrics(registry)
    names = set()
    for family in text_string_to_metric_families(metrics.render(registry).decode()):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        names.add(family.name)
    return names


def referenced(expr: str) -> set[str]:
    names = set()
    for name in re.findall(r"\bdrsvc_[a-z0-9_]+", expr):
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        names.add(name)
    return names


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_rule_tests_pass() -> None:
    done = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_exercised_by_a_rule_test() -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    names = {r["alert"] for r in rules()}
    assert {c["alertname"] for c in cases} == names  # each is checked quiet on a healthy fleet...
    assert {c["alertname"] for c in cases if c.get("exp_alerts")} == names  # ...and firing on its condition


def test_every_summary_names_an_existing_runbook() -> None:
    books = {b.name for b in runbooks()}
    for rule in rules():
        found = re.search(r"runbook: drsvc runbook show ([a-z0-9-]+)", rule["annotations"]["summary"])
        assert found, rule["alert"]
        assert found.group(1) in books, (rule["alert"], found.group(1))


def test_rules_name_only_metrics_drsvc_exports(fleet) -> None:
    exported = exported_families(fleet)
    for rule in rules():
        missing = referenced(rule["expr"]) - exported
        assert not missing, (rule["alert"], missing)


def test_dashboard_queries_name_only_metrics_drsvc_exports(fleet) -> None:
    exported = exported_families(fleet)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", []) if "expr" in target]
    assert len(exprs) >= 10
    for expr in exprs:
        names = referenced(expr)
        assert names, f"a query naming no drsvc metric: {expr}"
        assert not names - exported, (expr, names - exported)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            assert not referenced(json.dumps(variable["query"])) - exported, variable["name"]
