"""templates/grafana/condaport.json (Grafana cannot be installed here): valid JSON, unique
panel ids, a Prometheus datasource variable every query uses, and every metric a query
names is one the exporters really expose: condaport-metrics' own families (read from a
real exposition), the Lua counters NGINX serves, and the documented names of Debian's NGINX
exporter, HAProxy's built-in exporter and the node exporter."""

from __future__ import annotations

import json
import re
from pathlib import Path

from condaport import index
from condaport.config import load
from condaport.metrics import collect
from tests.support.channel_tree import ChannelTree

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "templates" / "grafana" / "condaport.json"
LUA_COUNTERS = REPO / "roles/condaport_nginx/templates/etc/nginx/conf.d/condaport-metrics.conf.j2"
# Documented names the dashboard uses: prometheus-nginx-exporter (stub_status metrics),
# HAProxy's PROMEX (server metrics), the node exporter (filesystem collector), and
# Prometheus' own `up`.
DOCUMENTED = {
    "nginx_http_requests_total",
    "nginx_connections_active",
    "nginx_connections_accepted",
    "nginx_up",
    "haproxy_server_status",
    "haproxy_backend_active_servers",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "up",
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def condaport_names(tree: ChannelTree) -> set[str]:
    index.run(tree.root, tree.state, None)
    text = collect(load(tree.config), [])
    exposed = set(re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE))
    lua = set(re.findall(r'\{"(condaport_\w+)", "counter"', LUA_COUNTERS.read_text()))
    assert lua, "the Lua counters' families moved: update this test"
    return exposed | lua


def metric_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that are metric names: not functions (followed
    by a parenthesis), label matchers, grouping labels, durations or keywords."""
    stripped = re.sub(r'"[^"]*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    names = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", stripped)
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d.*|e\d+", n)}


def test_every_query_names_metrics_that_are_exposed(tree: ChannelTree) -> None:
    known = condaport_names(tree) | DOCUMENTED
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, target["expr"]
            assert names <= known, (panel["title"], names - known)
            used |= names
    # The dashboard shows condaport's own families, not only the exporters'.
    for family in ("condaport_uploads_total", "condaport_cache_requests_total"):
        assert family in used


def test_panels_and_datasource(tree: ChannelTree) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_the_name_extraction_itself() -> None:
    expr = 'sum by (tier) (rate(x_total{a="b{c}"}[5m])) / clamp_min(y, 1e-9) - time()'
    assert metric_names(expr) == {"x_total", "y"}
