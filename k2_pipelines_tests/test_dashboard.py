"""The provisioned Grafana dashboard (docker/grafana): its queries use only the metric catalogue, through the
provisioned datasource, and cover ingestion, lag, quality, upkeep and incidents."""

import json
from pathlib import Path

import yaml

from k2_pipelines_tests.test_alert_rules import CATALOGUE, catalogue_problems, promql_selectors

GRAFANA = Path(__file__).resolve().parent.parent / "docker" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "k2.json").read_text())


def panels() -> list[dict]:
    return [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]


def test_provisioning_points_at_prometheus_and_the_mounted_dashboards():
    (datasource,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "k2.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"  # where compose mounts dashboards/


def test_every_query_uses_the_provisioned_datasource():
    (datasource,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_queries_use_only_catalogue_metrics_and_labels():
    used = set()
    for panel in panels():
        for target in panel["targets"]:
            assert catalogue_problems(target["expr"]) == [], (panel["title"], target["expr"])
            used |= {name for name, _ in promql_selectors(target["expr"])[0]}
    assert used == set(CATALOGUE)  # every K2 metric is on the dashboard


def test_panel_ids_unique_and_layout_without_overlap():
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, panel["title"]
        cells |= mine


def test_rows_for_each_theme():
    rows = [panel["title"] for panel in DASHBOARD["panels"] if panel["type"] == "row"]
    assert rows == ["Ingestion", "Lag", "Quality", "Upkeep", "Incidents", "API"]
    assert DASHBOARD["uid"] == "k2-pipelines" and DASHBOARD["editable"] is False
