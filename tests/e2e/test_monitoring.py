"""The chart's monitoring, as Prometheus would see it.

The PrometheusRule is read by Prometheus's own rule loader and PromQL parser, and
evaluated by its engine (`promql-check`, built from the Go module proxy), on the
series that real processes export: a leader and a standby controller running
as the chart's ServiceAccount on the real API server, and the webhook. The
ServiceMonitor's TLS settings are used to scrape the real webhook's /metrics
over TLS with a certificate made as the controller makes it.
"""

from __future__ import annotations

import datetime
import json
import math
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.chart import CHART, REGISTRY, apply, render
from tests.e2e.controllers import ControllerProcess, controller_process
from tests.e2e.controlplane import ControlPlane
from tests.e2e.test_ownership import account_kubeconfig, chart_objects
from tests.fake_ecr import FakeEcr, fake_ecr
from tests.support import free_port, require_binary, stop_process, wait_for, webhook_process
from webhook.controller.webhookcerts import Material, plan

RELEASE = "monitoring-e2e"  # release and namespace
CONTROLLER = f"{RELEASE}-ecr-pullthrough-controller"
WEBHOOK = f"{RELEASE}-ecr-pullthrough-webhook"
STATUS = f"{RELEASE}-ecr-pullthrough-upstream-status"
PULL_SECRET = "monitoring-e2e-pull"
SERVED = "monitoring-e2e/served"  # namespaces without this label are excluded (`!label`)
LEADER_ONLY_ALERTS = {
    "EcrPullthroughTokenNearExpiry",
    "EcrPullthroughTokenExpiring",
    "EcrPullthroughUpstreamUnverified",
    "EcrPullthroughUpstreamDegraded",
    "EcrPullthroughNamespacesOutOfSync",
}
# Sample names a family of each type exposes (prometheus_client's parser drops a counter's `_total`).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "unknown": ("",),
}


def rules_file(helm: Path, folder: Path) -> Path:
    """The rendered PrometheusRule's groups, as a Prometheus rule file."""
    [rule] = render(
        helm,
        release=RELEASE,
        namespace=RELEASE,
        show_only=("templates/prometheusrule.yaml",),
        set_values={"prometheusRule.enabled": "true"},
    )
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def dashboard_rules(folder: Path) -> Path:
    """Every query of the Grafana dashboard, as recording rules (Grafana's variables filled in)."""
    dashboard = json.loads((CHART / "dashboards" / "ecr-pullthrough.json").read_text())
    records = [
        {
            "record": f"dashboard:panel_{panel['id']}_{target['refId']}",
            "expr": target["expr"].replace("$__rate_interval", "5m").replace("$namespace", RELEASE),
        }
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    path = folder / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    return path


def promql_check(*args: str) -> Any:
    done = subprocess.run([str(require_binary("promql-check")), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_rules_load_in_prometheus_and_name_their_metrics(helm: Path, tmp_path: Path) -> None:
    rules = promql_check("rules", str(rules_file(helm, tmp_path)))
    alerts = {rule["alert"] for rule in rules}
    assert LEADER_ONLY_ALERTS | {"EcrPullthroughNoLeader", "EcrPullthroughWebhookErrors"} <= alerts
    assert all(rule["metrics"] for rule in rules), "every rule selects a metric"
    assert all(f'namespace="{RELEASE}"' in rule["expr"] for rule in rules), "every rule is scoped to its release"


def test_the_dashboard_queries_parse_and_show_what_operators_need(tmp_path: Path) -> None:
    queries = promql_check("rules", str(dashboard_rules(tmp_path)))
    shown = {metric for query in queries for metric in query["metrics"]}
    assert {
        "ecr_pullthrough_admissions_total",  # admissions by outcome
        "ecr_pullthrough_image_decisions_total",  # and by reason
        "ecr_pullthrough_admission_duration_seconds_bucket",  # latency
        "ecr_pullthrough_token_expiry_timestamp_seconds",
        "ecr_pullthrough_namespaces_in_sync",
        "ecr_pullthrough_upstream_verified",
    } <= shown


def test_a_broken_expression_is_refused(tmp_path: Path) -> None:
    """The checker can fail: Prometheus's loader refuses what Prometheus would refuse."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "rate(x[5m]"}]}]}))
    done = subprocess.run(
        [str(require_binary("promql-check")), "rules", str(broken)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "could not parse expression" in done.stderr


def exposed_names(text: str) -> dict[str, str]:
    """Every sample name the exposition can hold (also of families without samples yet), with its family's type."""
    names = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = family.type
    return names


def as_series(text: str, pod: str, job: str) -> list[dict[str, Any]]:
    """The samples with the target labels a ServiceMonitor scrape adds."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if math.isfinite(sample.value):
                labels = {**sample.labels, "__name__": sample.name, "namespace": RELEASE, "pod": pod, "job": job}
                found.append({"labels": labels, "value": sample.value})
    return found


def evaluate(rules: Path, folder: Path, *series: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each alert's pending or firing series on these series, held constant for two hours."""
    path = folder / f"series-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps({"at": time.time(), "series": [s for group in series for s in group]}))
    return {alert: found for alert, found in promql_check("eval", str(rules), str(path)).items() if found}


@pytest.fixture
def ecr() -> Iterator[FakeEcr]:
    with fake_ecr() as endpoint:
        yield endpoint


def controller_args() -> tuple[str, ...]:
    return (
        "--registry", REGISTRY, "--namespace", RELEASE, "--lease-name", CONTROLLER,
        "--instance", f"{RELEASE}.{RELEASE}", "--secret-name", PULL_SECRET,
        "--exclude-namespace-selector", f"!{SERVED}",
        "--upstream-status-configmap", STATUS, "--verify-seconds", "1",
        "--lease-seconds", "4", "--renew-deadline-seconds", "3", "--retry-seconds", "0.5",
        "--api-qps", "1000", "--api-burst", "1000",
    )  # fmt: skip


def scrape(process: ControllerProcess) -> str:
    status, text = process.get("/metrics")
    assert status == 200
    return text


def test_every_metric_exists_and_nothing_fires_on_a_standby(
    control_plane: ControlPlane, helm: Path, ecr: FakeEcr, tmp_path: Path
) -> None:
    rules = rules_file(helm, tmp_path)
    control_plane.create_namespace(RELEASE)
    with control_plane.api_client() as admin:
        apply(admin, chart_objects(helm, RELEASE, PULL_SECRET), RELEASE)
    kubeconfig = account_kubeconfig(control_plane, RELEASE, PULL_SECRET, tmp_path)
    served = [f"monitoring-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    for name in served:
        control_plane.create_namespace(name, labels={SERVED: "true"})
    # Two replicas as the chart runs them: one leads, one stands by.
    with (
        controller_process(kubeconfig, ecr, tmp_path, "a", *controller_args()) as leader,
        webhook_process(tmp_path, "--registry", REGISTRY) as webhook,
    ):

        def settled() -> bool:
            return (
                leader.metric("ecr_pullthrough_leader") == 1
                and leader.metric("ecr_pullthrough_upstream_verified", upstream="docker.io") == 1
                and leader.metric("ecr_pullthrough_namespaces_in_sync") >= len(served)
                and leader.metric("ecr_pullthrough_namespaces_in_sync") == leader.metric("ecr_pullthrough_namespaces")
            )

        wait_for(settled, timeout=30, what="the leader to hold a token, verify docker.io and sync its namespaces")
        with controller_process(kubeconfig, ecr, tmp_path, "b", *controller_args()) as standby:
            wait_for(
                lambda: standby.metric("ecr_pullthrough_namespaces") >= len(served),
                what="the standby to list the namespaces",
            )
            leader_text, standby_text = scrape(leader), scrape(standby)
        context = webhook.ssl_context()
        with urllib.request.urlopen(f"{webhook.url}/metrics", context=context, timeout=5) as answer:
            webhook_text = answer.read().decode()

        # What makes a standby a trap: its own series say "no token, nothing in sync".
        standby_series = as_series(standby_text, "b", CONTROLLER)
        values = {s["labels"]["__name__"]: s["value"] for s in standby_series if len(s["labels"]) == 4}
        assert values["ecr_pullthrough_leader"] == 0
        assert values["ecr_pullthrough_token_expiry_timestamp_seconds"] == 0
        assert values["ecr_pullthrough_namespaces"] > values["ecr_pullthrough_namespaces_in_sync"]

        # Every metric a rule names exists in the processes' /metrics, counters by their `_total` name.
        exposed = exposed_names(leader_text) | exposed_names(standby_text) | exposed_names(webhook_text)
        named = promql_check("rules", str(rules)) + promql_check("rules", str(dashboard_rules(tmp_path)))
        for rule in named:
            what = rule.get("alert") or rule["record"]
            for metric in rule["metrics"]:
                assert metric in exposed, f"{what}: {metric} is not in any /metrics"
                if exposed[metric] == "counter":
                    assert metric.endswith("_total"), f"{what}: counter {metric} without _total"

        leader_series = as_series(leader_text, "a", CONTROLLER)
        webhook_series = as_series(webhook_text, "w", WEBHOOK)
        assert evaluate(rules, tmp_path, leader_series, standby_series, webhook_series) == {}
        # The standby alone is a release without a leader: that alert, and none of the leader's.
        assert set(evaluate(rules, tmp_path, standby_series)) == {"EcrPullthroughNoLeader"}

        # The rules can fire on the leader's series: an unverified upstream, a token about to expire.
        ecr.import_denied.add("docker-hub")
        wait_for(
            lambda: leader.metric("ecr_pullthrough_upstream_verified", upstream="docker.io") == 0,
            timeout=30,
            what="docker.io unverified",
        )
        broken = as_series(scrape(leader), "a", CONTROLLER)
        now = time.time()
        for sample in broken:
            if sample["labels"]["__name__"] == "ecr_pullthrough_token_expiry_timestamp_seconds":
                sample["value"] = now + 1800
        fired = evaluate(rules, tmp_path, broken, standby_series, webhook_series)
        assert set(fired) == {
            "EcrPullthroughUpstreamUnverified",
            "EcrPullthroughTokenNearExpiry",
            "EcrPullthroughTokenExpiring",
        }, fired
        assert all('pod="a"' in line for lines in fired.values() for line in lines)
        assert any('upstream="docker.io"' in line for line in fired["EcrPullthroughUpstreamUnverified"])


def test_the_service_monitor_verifies_the_webhook_certificate(helm: Path, tmp_path: Path) -> None:
    """Scrape the real webhook's /metrics with exactly the ServiceMonitor's TLS settings."""
    [monitor] = render(
        helm,
        release=RELEASE,
        namespace=RELEASE,
        show_only=("templates/servicemonitor.yaml",),
        set_values={"serviceMonitor.enabled": "true"},
    )
    [tls_endpoint] = [e for e in monitor["spec"]["endpoints"] if e.get("scheme") == "https"]
    tls = tls_endpoint["tlsConfig"]
    assert "insecureSkipVerify" not in tls
    assert tls["ca"] == {"secret": {"name": f"{WEBHOOK}-tls", "key": "ca.crt"}}
    [custom] = render(
        helm,
        show_only=("templates/servicemonitor.yaml",),
        set_values={"serviceMonitor.enabled": "true", "serviceMonitor.caSecret.name": "corp-ca"}
        | {"serviceMonitor.caSecret.key": "root.pem"},
    )
    assert custom["spec"]["endpoints"][1]["tlsConfig"]["ca"] == {"secret": {"name": "corp-ca", "key": "root.pem"}}

    # The TLS Secret as the controller fills it for this release's webhook Service.
    service_names = (f"{WEBHOOK}.{RELEASE}.svc", f"{WEBHOOK}.{RELEASE}.svc.cluster.local")
    material = plan(Material({}), service_names, datetime.datetime.now(datetime.UTC))
    assert material is not None
    (tmp_path / "tls.crt").write_bytes(material.files["tls.crt"])
    (tmp_path / "tls.key").write_bytes(material.files["tls.key"])
    port = free_port()
    command = [sys.executable, "-m", "webhook", "webhook", "--registry", REGISTRY, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key")]
    command += ["--require-verified-upstreams=false"]
    with open(tmp_path / "webhook.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cadata=material.files["ca.crt"].decode())

        def scraped(server_name: str) -> str | None:
            """GET /metrics as Prometheus does: to the pod's address, verifying the certificate against serverName."""
            if process.poll() is not None:
                raise AssertionError((tmp_path / "webhook.log").read_text())
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            except ConnectionRefusedError:
                return None
            with raw, context.wrap_socket(raw, server_hostname=server_name) as connection:
                connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: webhook\r\nConnection: close\r\n\r\n")
                answer = b"".join(iter(lambda: connection.recv(65536), b""))
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            return answer.decode()

        text = wait_for(lambda: scraped(tls["serverName"]), timeout=30, what="a verified scrape")
        assert "ecr_pullthrough_admissions" in text
        # Without serverName the scrape would name the pod's IP, which the certificate does not hold.
        with pytest.raises(ssl.SSLCertVerificationError):
            scraped("127.0.0.1")
    finally:
        stop_process(process)
