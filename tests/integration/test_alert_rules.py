"""The Prometheus rules (deploy/monitoring/rules) under the real ``promtool``: they load, their
unit tests pass, every alert has a test that fires and one that stays quiet, and those tests
catch an alert that never fires or always does. Each alert carries what docs/alerts.md asks
of it: a severity, a ``for:``, a summary, a description and a runbook section that exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/monitoring/rules/wsfleet.rules.yaml"
UNIT_TESTS = sorted((ROOT / "deploy/monitoring/rules/tests").glob("*.yaml"))
RUNBOOK = ROOT / "docs/alerts.md"
SEVERITIES = {"critical", "warning"}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: run scripts/install-test-deps.sh"
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def alerts(rules_text: str) -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for group in yaml.safe_load(rules_text)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_unit_tests_pass() -> None:
    assert UNIT_TESTS
    result = promtool("test", "rules", *UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_that_fires_and_one_that_stays_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alerts(RULES.read_text()))
    assert names - firing == set(), "alerts with no test that fires"
    assert names - quiet == set(), "alerts with no test that stays quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_every_alert_has_a_severity_a_for_annotations_and_a_runbook_section() -> None:
    headings = {
        _anchor(line.lstrip("#").strip())
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    for name, rule in alerts(RULES.read_text()).items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{name}: no for: (it would flap)"
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert "$value" in annotations["summary"] + annotations["description"] or (
            "$labels" in annotations["summary"]
        ), f"{name}: the annotations show neither the value nor what it is about"
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/alerts.md" and anchor == _anchor(name), name
        assert anchor in headings, f"{name}: docs/alerts.md has no section #{anchor}"


def _anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


@pytest.mark.parametrize("mutation", ["never fires", "always fires"])
def test_the_unit_tests_catch_an_alert_that_never_or_always_fires(
    mutation: str, tmp_path: Path
) -> None:
    """Every alert is replaced by one that never fires, and the checks that expect it to
    fire are run (each alert's must fail); or by one that always fires, and the checks that
    expect quiet are run (each alert's must fail too)."""
    never = mutation == "never fires"
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["expr"] = f"({rule['expr']}) unless on () vector(1)" if never else "vector(1)"
    (tmp_path / "wsfleet.rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests").mkdir()
    for path in UNIT_TESTS:
        suite = yaml.safe_load(path.read_text())
        for case in suite["tests"]:
            case["alert_rule_test"] = [
                check
                for check in case.get("alert_rule_test", [])
                if bool(check.get("exp_alerts")) == never
            ]
        (tmp_path / "tests" / path.name).write_text(yaml.safe_dump(suite))
    result = promtool("test", "rules", *sorted((tmp_path / "tests").glob("*.yaml")))
    assert result.returncode != 0, result.stdout
    for name in alerts(RULES.read_text()):
        assert f"alertname: {name}," in result.stdout + result.stderr, f"{name} {mutation}"
