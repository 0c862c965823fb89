"""The Grafana dashboard (deploy/grafana/dashboards/llmpool.json) queries only what llmpool exports.

Every query names metrics of the catalog (llmpool.metrics.catalog) and groups, filters and labels by
labels those metrics have; every exported family is on the dashboard. That the running API's /metrics
exports each name is tests/integration/test_metrics.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmpool.metrics.catalog import COUNTED, LIVE, Family

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "llmpool.json"
DATASOURCE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
METRIC = re.compile(r"\bllmpool_\w+")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def series_names(family: Family) -> dict[str, set[str]]:
    """The sample names a family exports, each with the labels its samples carry."""
    labels = set(family.exported_labels)
    if family.kind == "histogram":
        return {f"{family.name}_bucket": labels | {"le"}, f"{family.name}_sum": labels,
                f"{family.name}_count": labels}
    return {family.name: labels}


EXPORTED = {name: labels for family in (*COUNTED, *LIVE.values()) for name, labels in series_names(family).items()}
SCRAPE_LABELS = {"job", "instance"}  # what Prometheus adds to every series it scrapes


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, expr, legend) of every query, the template variables' included."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target.get("legendFormat", "")
    for variable in dashboard["templating"]["list"]:
        yield f"${variable['name']}", variable["definition"], ""


def test_every_panel_queries_llmpool_through_the_provisioned_datasource() -> None:
    dashboard = load_dashboard()
    uid = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]["uid"]
    shown = [p for p in panels(dashboard) if p["type"] != "row"]
    assert len(shown) >= 15
    assert len({p["id"] for p in panels(dashboard)}) == len(list(panels(dashboard)))
    for panel in shown:
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            assert METRIC.search(target["expr"]), (panel["title"], target["expr"])


@pytest.mark.parametrize(("title", "expr", "legend"), list(queries(load_dashboard())))
def test_a_query_names_exported_metrics_and_their_labels(title: str, expr: str, legend: str) -> None:
    names = METRIC.findall(expr)
    assert names and not set(names) - set(EXPORTED), f"{title}: {expr}"
    labels = set.union(*(EXPORTED[name] for name in names)) | SCRAPE_LABELS
    grouped = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",") if label.strip()}
    matched = {label for block in MATCHERS.findall(expr) for label in MATCHER_LABEL.findall(block)}
    assert grouped | matched <= labels, f"{title}: {expr} uses {(grouped | matched) - labels}"
    shown = set(LEGEND_LABEL.findall(legend))
    kept = (grouped - {"le"}) if grouped else labels  # sum by (...) keeps only those labels
    assert shown <= kept, f"{title}: legend {legend!r} names labels the query drops"


def test_every_exported_family_is_on_the_dashboard() -> None:
    named = {name for _title, expr, _legend in queries(load_dashboard()) for name in METRIC.findall(expr)}
    missing = [f.name for f in (*COUNTED, *LIVE.values()) if not set(series_names(f)) & named]
    assert missing == []
