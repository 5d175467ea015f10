"""The alerts fire when they should and only then, as Prometheus itself evaluates them.

The rule groups of manifests/observability/prometheusrule.yaml go into a plain rules file, which
`promtool check rules` checks and `promtool test rules` runs the cases of
prometheusrule-tests.yaml against. promtool is Debian's `prometheus` package (CI installs it:
.ci/run); without it these tests fail, naming the package, rather than skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
RULE = ROOT / "manifests" / "observability" / "prometheusrule.yaml"
RULE_TESTS = Path(__file__).with_name("prometheusrule-tests.yaml")


def promtool() -> str:
    """The promtool binary; fails the test, naming the package, when it is not installed."""
    found = shutil.which("promtool") or shutil.which("/usr/bin/promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: install the Debian package `prometheus` "
            "(apt-get install prometheus), as .ci/run does"
        )
    return found


def _rule_groups() -> list[dict[str, Any]]:
    rule = yaml.safe_load(RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    return list(rule["spec"]["groups"])


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A folder with the rules file (rules.yaml) and a copy of the rule tests beside it, where
    promtool looks for the tests' `rule_files`."""
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": _rule_groups()}, sort_keys=False)
    )
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return tmp_path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_promtool_accepts_the_rules(rules_dir: Path) -> None:
    result = _run("check", "rules", "rules.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = sum(len(group["rules"]) for group in _rule_groups())
    assert f"SUCCESS: {rules} rules found" in result.stdout + result.stderr


def test_the_alerts_fire_as_the_rule_tests_expect(rules_dir: Path) -> None:
    result = _run("test", "rules", RULE_TESTS.name, cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has a case where it fires and one where it does not; the drift check's
    staleness is tested for a stale run, a run that never happened and a fresh run."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == ["rules.yaml"]
    cases: dict[str, dict[bool, list[str]]] = {}
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            fired = bool(check.get("exp_alerts"))
            cases.setdefault(check["alertname"], {True: [], False: []})[fired].append(case["name"])
    alerts = [rule["alert"] for group in _rule_groups() for rule in group["rules"]]
    for alert in alerts:
        assert cases.get(alert, {}).get(True), f"no case where {alert} fires"
        assert cases.get(alert, {}).get(False), f"no case where {alert} stays quiet"
    stale = cases["TextopsDriftCheckStale"]
    assert any("3 days ago" in name for name in stale[True])
    assert any("never ran" in name for name in stale[True])
    assert any("an hour ago" in name for name in stale[False])
