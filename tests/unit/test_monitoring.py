"""The monitoring role's files, checked by Prometheus' own promtool as the role's
`validate:` does: the scrape configuration for an inventory of every tier, the alert rules,
and `promtool test rules` cases in which each alert fires, and others in which it does not."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.render import Renderer

TOKEN = "metrics-token-0123456789abcdefghijkl"
HOSTS = {
    "channel_hosts": ["primary"],
    "channel_edges": ["edge1", "edge2"],
    "channel_balancers": ["balancer"],
    "channel_monitoring": ["balancer"],
}


def render(tmp_path: Path) -> tuple[Path, Path]:
    hostvars = {name: {} for names in HOSTS.values() for name in names}
    hostvars["edge1"]["condaport_nginx_https_port"] = 21444
    inventory = {
        "groups": HOSTS,
        "hostvars": hostvars,
        "inventory_hostname": "balancer",
        "condaport_metrics_token": TOKEN,
        "condaport_monitoring_ca_pem": "unused: the path is what promtool checks",
        "__condaport_monitoring_rules": str(tmp_path / "condaport.rules.yml"),
        "__condaport_monitoring_token_file": str(tmp_path / "token"),
        "__condaport_monitoring_ca_file": str(tmp_path / "ca.crt"),
    }
    renderer = Renderer(["condaport", "condaport_monitoring"], inventory)
    rules = tmp_path / "condaport.rules.yml"
    rules.write_text(
        renderer.render("condaport_monitoring", "etc/prometheus/condaport.rules.yml.j2")
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(renderer.render("condaport_monitoring", "etc/prometheus/prometheus.yml.j2"))
    (tmp_path / "token").write_text(TOKEN)
    return config, rules


def promtool(*args: str) -> str:
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_scrape_configuration_names_every_tier_and_exporter(tmp_path: Path) -> None:
    config, _ = render(tmp_path)
    promtool("check", "config", str(config))
    jobs = {job["job_name"]: job for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    for tier in ("primary", "edge"):
        for exporter in ("nginx", "lua", "condaport", "node"):
            job = jobs[f"condaport_{tier}_{exporter}"]
            assert job["scheme"] == "https"
            assert job["metrics_path"] == f"/.well-known/condaport/metrics/{exporter}"
            assert job["authorization"]["credentials_file"] == str(tmp_path / "token")
            assert job["tls_config"]["ca_file"] == str(tmp_path / "ca.crt")
    edges = jobs["condaport_edge_nginx"]["static_configs"][0]["targets"]
    assert edges == ["edge1:21444", "edge2:443"]
    # The balancer is this host: its loopback frontend.
    assert jobs["condaport_balancer_haproxy"]["static_configs"][0]["targets"] == ["127.0.0.1:8405"]
    assert jobs["condaport_balancer_node"]["metrics_path"] == "/node"
    assert TOKEN not in config.read_text()


def test_the_rules_pass_promtool(tmp_path: Path) -> None:
    _, rules = render(tmp_path)
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", str(rules))


def series(name: str, values: str, **labels: str) -> dict:
    """One input series of a promtool test, in Prometheus' series notation."""
    rendered = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


def alert(name: str, severity: str, summary: str, **labels: str) -> dict:
    return {
        "exp_labels": {"alertname": name, "severity": severity, **labels},
        "exp_annotations": {"summary": summary},
    }


CASES = [
    {
        "interval": "1m",
        "input_series": [
            series("condaport_index_stale", "1x30", channel="main", subdir="noarch", instance="p"),
            series(
                "condaport_index_stale", "0x30", channel="main", subdir="linux-64", instance="p"
            ),
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "CondaportIndexStale", "exp_alerts": []},
            {
                "eval_time": "20m",
                "alertname": "CondaportIndexStale",
                "exp_alerts": [
                    alert(
                        "CondaportIndexStale",
                        "warning",
                        "main/noarch on p: the index is not built from the files on disk",
                        channel="main",
                        subdir="noarch",
                        instance="p",
                    )
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            series(
                "condaport_uploads_total",
                "0x10 1 2 3 3 3",
                method="PUT",
                result="failed",
                instance="p",
            ),
            series("condaport_uploads_total", "0+5x20", method="PUT", result="added", instance="q"),
        ],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "CondaportUploadsFailing", "exp_alerts": []},
            {
                "eval_time": "14m",
                "alertname": "CondaportUploadsFailing",
                "exp_alerts": [
                    alert("CondaportUploadsFailing", "warning", "Uploads fail on p", instance="p")
                ],
            },
        ],
    },
    {
        "interval": "1m",
        # notAfter in 20 days (fires) and in 30 days (does not), counted from time 0.
        "input_series": [
            series(
                "condaport_certificate_expiry_timestamp_seconds",
                "1728000x5",
                instance="p",
                path="/c",
            ),
            series(
                "condaport_certificate_expiry_timestamp_seconds",
                "2592000x5",
                instance="e1",
                path="/c",
            ),
        ],
        "alert_rule_test": [
            {
                "eval_time": "1m",
                "alertname": "CondaportCertificateExpiring",
                "exp_alerts": [
                    alert(
                        "CondaportCertificateExpiring",
                        "warning",
                        "The certificate of p expires within 21 days",
                        instance="p",
                        path="/c",
                    )
                ],
            }
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            series(
                "up",
                "1 0x10",
                job="condaport_edge_nginx",
                tier="edge",
                exporter="nginx",
                instance="e1",
            ),
            series(
                "up",
                "1x10",
                job="condaport_edge_nginx",
                tier="edge",
                exporter="nginx",
                instance="e2",
            ),
            series(
                "haproxy_server_status",
                "1 0x10",
                proxy="condaport_edges",
                server="e1",
                state="UP",
                instance="b",
            ),
            series(
                "haproxy_server_status",
                "1x10",
                proxy="condaport_edges",
                server="e2",
                state="UP",
                instance="b",
            ),
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "CondaportEdgeDown", "exp_alerts": []},
            {
                "eval_time": "4m",
                "alertname": "CondaportEdgeDown",
                "exp_alerts": [
                    alert(
                        "CondaportEdgeDown",
                        "critical",
                        "Edge e1 does not answer",
                        job="condaport_edge_nginx",
                        tier="edge",
                        exporter="nginx",
                        instance="e1",
                    )
                ],
            },
            {
                "eval_time": "4m",
                "alertname": "CondaportEdgeOutOfRotation",
                "exp_alerts": [
                    alert(
                        "CondaportEdgeOutOfRotation",
                        "critical",
                        "The balancer b sends nothing to edge e1",
                        proxy="condaport_edges",
                        server="e1",
                        state="UP",
                        instance="b",
                    )
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            series(
                "node_filesystem_avail_bytes",
                "5x20",
                fstype="ext4",
                mountpoint="/srv",
                instance="p",
            ),
            series(
                "node_filesystem_size_bytes",
                "100x20",
                fstype="ext4",
                mountpoint="/srv",
                instance="p",
            ),
            series(
                "node_filesystem_avail_bytes", "50x20", fstype="ext4", mountpoint="/", instance="p"
            ),
            series(
                "node_filesystem_size_bytes", "100x20", fstype="ext4", mountpoint="/", instance="p"
            ),
            series(
                "node_filesystem_avail_bytes",
                "1x20",
                fstype="tmpfs",
                mountpoint="/run",
                instance="p",
            ),
            series(
                "node_filesystem_size_bytes",
                "100x20",
                fstype="tmpfs",
                mountpoint="/run",
                instance="p",
            ),
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "CondaportDiskAlmostFull", "exp_alerts": []},
            {
                "eval_time": "15m",
                "alertname": "CondaportDiskAlmostFull",
                "exp_alerts": [
                    alert(
                        "CondaportDiskAlmostFull",
                        "warning",
                        "/srv on p is almost full",
                        fstype="ext4",
                        mountpoint="/srv",
                        instance="p",
                    )
                ],
            },
        ],
    },
]


def test_each_alert_fires_when_it_should_and_not_before(tmp_path: Path) -> None:
    _, rules = render(tmp_path)
    tests = tmp_path / "condaport.rules.test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(rules)], "tests": CASES}))
    promtool("test", "rules", str(tests))
    fired = {
        case["alertname"]
        for test in CASES
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    declared = set(re.findall(r"alert: (\w+)", rules.read_text()))
    assert fired == declared


@pytest.mark.parametrize("wrong", ["1728000x5", "2592000x5"])
def test_a_wrong_expectation_fails_promtool(tmp_path: Path, wrong: str) -> None:
    """The harness itself can fail: a certificate alert expected for the other series."""
    _, rules = render(tmp_path)
    case = {
        "interval": "1m",
        "input_series": [
            {
                "series": 'condaport_certificate_expiry_timestamp_seconds{instance="x"}',
                "values": wrong,
            }
        ],
        "alert_rule_test": [
            {
                "eval_time": "1m",
                "alertname": "CondaportCertificateExpiring",
                "exp_alerts": []
                if wrong.startswith("1728000")
                else [alert("CondaportCertificateExpiring", "warning", "x", instance="x")],
            }
        ],
    }
    tests = tmp_path / "wrong.test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(rules)], "tests": [case]}))
    done = subprocess.run(
        ["promtool", "test", "rules", str(tests)], capture_output=True, check=False
    )
    assert done.returncode != 0
