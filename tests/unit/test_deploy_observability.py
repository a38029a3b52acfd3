"""Dashboards and alert rules as code: generated files up to date, rules pass promtool, and
every query names metrics the services and gateway really export. (The queries are run
against a live Prometheus in tests/e2e/test_observability.py.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from deploy.observability.alerts import all_alerts, rule_groups
from deploy.observability.dashboards import all_dashboards, to_json
from deploy.observability.generate import outputs, stale_files, write
from deploy.render import REPO
from gateway.metrics import GatewayMetrics
from services.core.metrics import ServiceMetrics
from services.jobs.metrics import WorkerMetrics
from tests.support.deploy_tools import promtool

RULES = REPO / "charts" / "mtc" / "rules" / "mtc-alerts.yaml"
RULE_TESTS = REPO / "deploy" / "observability" / "alerts_test.yaml"
METRIC_NAME = re.compile(r"\b(mtc_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Series names a registry can export, including labelled metrics not yet incremented."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def all_queries() -> list[str]:
    queries = [alert.expr for alert in all_alerts()] + [alert.signal for alert in all_alerts()]
    for dashboard in all_dashboards():
        queries += [q.expr for panel in dashboard.panels for q in panel.queries]
    return queries


def test_generated_files_are_up_to_date() -> None:
    assert stale_files() == [], "run: python -m deploy.observability.generate"


def test_a_hand_edited_generated_file_is_detected(tmp_path: Path) -> None:
    written = write(tmp_path)
    assert stale_files(tmp_path) == []
    edited = tmp_path / "charts/mtc/dashboards/mtc-overview.json"
    edited.write_text(edited.read_text().replace("Requests per second", "Requests"))
    (tmp_path / written[-1]).unlink()
    assert stale_files(tmp_path) == [Path("charts/mtc/dashboards/mtc-overview.json"), written[-1]]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [str(promtool()), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = subprocess.run(
        [str(promtool()), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == {alert.name for alert in all_alerts()}, "every alert has a unit test"


def test_promtool_unit_tests_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    tests = RULE_TESTS.read_text().replace("severity: critical", "severity: page")
    tests = tests.replace("../../charts/mtc/rules/mtc-alerts.yaml", str(RULES))
    broken = tmp_path / "alerts_test.yaml"
    broken.write_text(tests)
    result = subprocess.run(
        [str(promtool()), "test", "rules", str(broken)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


def test_every_query_names_metrics_that_are_exported() -> None:
    service = ServiceMetrics("sentiment")
    gateway = GatewayMetrics(["sentiment"])
    gateway.watch_replicas({})
    worker = WorkerMetrics(["sentiment"])
    worker.watch_queue(lambda: 0)
    known = (
        exported_names(service.registry)
        | exported_names(gateway.registry)
        | exported_names(worker.registry)
    )
    for query in all_queries():
        unknown = set(METRIC_NAME.findall(query)) - known
        assert not unknown, f"{sorted(unknown)} in {query}"


def test_dashboards_are_well_formed() -> None:
    dashboards = [to_json(dashboard) for dashboard in all_dashboards()]
    assert len({d["uid"] for d in dashboards}) == len(dashboards) == 6
    overview = next(d for d in dashboards if d["uid"] == "mtc-overview")
    titles = " ".join(panel["title"] for panel in overview["panels"]).lower()
    for topic in ("requests", "error", "latency", "cache hit", "queue", "batch", "replicas"):
        assert topic in titles, topic
    for dashboard in dashboards:
        variables = [v["name"] for v in dashboard["templating"]["list"]]
        assert variables == ["datasource", "namespace", "task"]
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(set(ids)) == len(ids)
        for panel in dashboard["panels"]:
            assert panel["targets"], panel["title"]
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            for target in panel["targets"]:
                assert 'namespace=~"$namespace"' in target["expr"], target["expr"]


def test_kustomize_and_chart_ship_the_same_generated_files() -> None:
    files = outputs()
    config_maps = list(yaml.safe_load_all(files[Path("components/dashboards/dashboards.yaml")]))
    for config_map in config_maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = config_map["data"].items()
        assert text == (REPO / "charts/mtc/dashboards" / name).read_text()
        json.loads(text)
    assert len(config_maps) == len(all_dashboards())
    rule = yaml.safe_load(files[Path("components/monitoring/prometheusrule.yaml")])
    assert rule["spec"] == yaml.safe_load(RULES.read_text()) == rule_groups()
