"""The Prometheus alert rules (docker/prometheus): valid for promtool, unit-tested with promtool, written only in
the metric catalogue's names and labels, and linked to runbook pages that exist."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from k2_pipelines.lib.metrics.catalogue import CATALOGUE as METRICS

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS = REPO / "docker" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
RUNBOOK_BASE = "https://github.com/k2/k2-pipelines/blob/main/"  # the rules' comments name the same base

CATALOGUE = {name: set(metric.labels) for name, metric in METRICS.items()}  # name: its labels
TARGET_LABELS = {"job", "instance"}  # added by scraping

KEYWORDS = {"and", "or", "unless", "bool", "offset"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
TOKEN = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\(|\{[^}]*\})?")  # a function call or a series selector


def promql_selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The series selectors of a PromQL expression, as (metric name, label names matched), and the label names its
    by/without/on/ignoring/group_* clauses use."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may hold anything
    grouping = {label.strip() for labels in GROUPING.findall(expr) for label in labels.split(",") if label.strip()}
    expr = re.sub(r"\[[^\]]*\]|\$\w+", " ", GROUPING.sub(" ", expr))  # ranges and Grafana variables
    if "{" in TOKEN.sub(" ", expr):
        raise ValueError(f"a selector without a metric name in {expr!r}")
    selectors = [(name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", follower)))
                 for name, follower in TOKEN.findall(expr) if follower != "(" and name not in KEYWORDS]
    return selectors, grouping


def catalogue_problems(expr: str) -> list[str]:
    """What an expression uses outside the catalogue; returns the labels its metrics carry when there is none."""
    selectors, grouping = promql_selectors(expr)
    problems = [f"{name} is not in the catalogue" for name, _ in selectors if name not in CATALOGUE]
    known = set().union(TARGET_LABELS, *(CATALOGUE.get(name, set()) for name, _ in selectors))
    problems += [f"{name}{{{label}}}: no such label" for name, labels in selectors
                 for label in labels - CATALOGUE.get(name, set()) - TARGET_LABELS]
    problems += [f"grouping by {label}: none of {[n for n, _ in selectors]} has it" for label in grouping - known]
    return problems


def test_promql_selectors_reads_names_and_labels():
    expr = ('sum by (table) (rate(k2_x_total{a="b{c}", d=~"e"}[5m])) / on(table) k2_y > 1e3 '
            'and time() - k2_z offset 5m > $threshold')
    assert promql_selectors(expr) == ([("k2_x_total", {"a", "d"}), ("k2_y", set()), ("k2_z", set())],
                                      {"table"})
    assert catalogue_problems('sum by (topic) (k2_table_rows{table="trades", kind="x"})') == [
        "k2_table_rows{kind}: no such label", "grouping by topic: none of ['k2_table_rows'] has it"]
    with pytest.raises(ValueError, match="without a metric name"):
        promql_selectors('{__name__="k2_table_rows"}')


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package (apt-get install -y -qq prometheus), "
                    "as `make test` does")
    return path


def run(*command, cwd: Path = REPO) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def unit_tests() -> list[dict]:
    return [case for path in TEST_FILES for test in yaml.safe_load(path.read_text())["tests"]
            for case in test["alert_rule_test"]]


def test_rule_files_pass_promtool_check(promtool):
    assert {path.stem for path in RULE_FILES} == {"ingestion", "quality", "upkeep", "recovery"}
    output = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert output.count("SUCCESS") == len(RULE_FILES)


def test_config_is_valid_and_loads_every_rule_file(promtool, tmp_path):
    # promtool resolves rule_files relative to the config file, as Prometheus does in the container
    output = run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"), cwd=tmp_path)
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output
    for path in RULE_FILES:
        assert f"Checking {PROMETHEUS / 'rules' / path.name}" in output


def test_scrape_targets_are_the_compose_services():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {target: job.get("honor_labels", False) for job in config["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]}
    # Pushed series keep their job and table; the upkeep metrics keep their own `job` label.
    assert targets == {"stream:9464": False, "metrics:9465": True, "pushgateway:9091": True, "api:8000": False,
                       "localhost:9090": False}


def test_promtool_unit_tests_pass(promtool):
    output = run(promtool, "test", "rules", *(path.name for path in TEST_FILES), cwd=PROMETHEUS / "tests")
    assert output.count("SUCCESS") == len(TEST_FILES)


def test_every_alert_is_unit_tested_firing_and_quiet():
    cases = unit_tests()
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} is never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} is never tested quiet"


def test_alerts_use_only_catalogue_metrics_and_labels():
    for rule in rules():
        assert catalogue_problems(rule["expr"]) == [], rule["alert"]
        selectors, _ = promql_selectors(rule["expr"])
        carried = set().union(TARGET_LABELS, *(CATALOGUE[name] for name, _ in selectors))
        for text in rule["annotations"].values():
            assert set(re.findall(r"\$labels\.(\w+)", text)) <= carried, (rule["alert"], text)


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def assert_page_exists(url: str):
    assert url.startswith(RUNBOOK_BASE), url
    path, _, anchor = url.removeprefix(RUNBOOK_BASE).partition("#")
    page = REPO / path
    assert page.is_file(), url
    if anchor:
        headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
        assert anchor in {github_anchor(heading) for heading in headings}, url


def test_alerts_have_for_severity_summary_description_and_runbook():
    alerts = rules()
    assert len(alerts) == len({rule["alert"] for rule in alerts})
    for rule in alerts:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
        if not rule["expr"].startswith("absent("):  # an absent series has no labels to show
            assert "$labels." in annotations["description"], rule["alert"]
        if "{{" not in annotations["runbook_url"]:
            assert_page_exists(annotations["runbook_url"])


def test_incident_alerts_link_every_kind_to_its_runbook_page():
    """The runbook index lists every incident kind; promtool proved which page each incident alert links for each
    kind in tests/recovery_test.yml, and here every kind is covered, for both alerts, and every page linked exists."""
    index = (REPO / "docs" / "runbooks" / "README.md").read_text().split("Pages for Prometheus alerts")[0]
    kinds = {kind for row in re.findall(r"^\| (`.+?) \|", index, flags=re.MULTILINE)
             for kind in re.findall(r"`(\w+)`", row)}
    assert "topic_recreated" in kinds and len(kinds) >= 9
    for alertname in ("K2IncidentOpen", "K2IncidentNeedsHuman"):
        linked = {alert["exp_labels"]["kind"]: alert["exp_annotations"]["runbook_url"] for case in unit_tests()
                  if case["alertname"] == alertname for alert in case["exp_alerts"]}
        assert set(linked) == kinds, alertname
        for url in linked.values():
            assert_page_exists(url)
