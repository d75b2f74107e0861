"""The chart on each EKS cluster shape (chart/ci/*-values.yaml), created on the real API server.

Every object each values file renders is created with `dryRun: All`: the API server validates and
defaults it as it would on install (pod templates, anti-affinity, preStop sleep, host ports, the
PodDisruptionBudget), and nothing is stored, so no controller-manager is needed. `helm test`'s
hooks are left out: their pods name a ServiceAccount that a dry run does not store.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from tests.e2e.chart import CHART, installed, render
from tests.e2e.controlplane import ControlPlane

VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
WEBHOOK_LABELS = {
    "app.kubernetes.io/name": "ecr-pullthrough",
    "app.kubernetes.io/instance": "ecr-pullthrough",
    "app.kubernetes.io/component": "webhook",
}


def created(control_plane: ControlPlane, objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each object as the API server would store it (dry run), by (kind, name)."""
    namespace = f"shape-{uuid.uuid4().hex[:8]}"
    control_plane.create_namespace(namespace)
    answers = {}
    with control_plane.api_client() as api:
        dynamic = DynamicClient(api)
        served = {group.name for group in client.ApisApi(api).get_api_versions().groups}
        for obj in installed(objects):  # `helm test`'s pods name accounts a dry run never stores
            group = obj["apiVersion"].rpartition("/")[0]
            if group and group not in served:
                continue  # cert-manager's and the Prometheus Operator's kinds: no CRDs in this API server
            resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            target = namespace if resource.namespaced else None
            if resource.namespaced:
                obj["metadata"]["namespace"] = namespace
            answer = resource.create(body=obj, namespace=target, query_params=[("dryRun", "All")])
            answers[(obj["kind"], obj["metadata"]["name"])] = answer.to_dict()
    return answers


def pod(answers: dict[tuple[str, str], dict[str, Any]], component: str) -> dict[str, Any]:
    [spec] = [
        obj["spec"]["template"]["spec"]
        for (kind, name), obj in answers.items()
        if kind == "Deployment" and name.endswith(f"-{component}")
    ]
    return spec


def args(spec: dict[str, Any]) -> list[str]:
    return list(spec["containers"][0]["args"])


@pytest.mark.parametrize("values", VALUES, ids=[v.name for v in VALUES])
def test_every_shape_is_accepted_by_the_api_server(control_plane: ControlPlane, helm: Path, values: Path) -> None:
    answers = created(control_plane, render(helm, values=(values,)))
    for component in ("webhook", "controller"):
        spec = pod(answers, component)
        # Windows node groups: our Linux image is never scheduled there.
        assert spec["nodeSelector"]["kubernetes.io/os"] == "linux"
    webhook = pod(answers, "webhook")
    assert webhook["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert webhook["terminationGracePeriodSeconds"] > 5 + 5, "drain, then uvicorn's graceful shutdown"


def test_the_defaults_listen_dual_stack(control_plane: ControlPlane, helm: Path) -> None:
    answers = created(control_plane, render(helm, values=(CHART / "ci" / "ipv6-values.yaml",)))
    assert "--host=::" in args(pod(answers, "webhook"))
    assert "--http-host=::" in args(pod(answers, "controller"))
    default = render(helm)
    assert "--host=::" in args(pod({(o["kind"], o["metadata"]["name"]): o for o in default}, "webhook"))


def test_custom_cni_runs_the_webhook_on_the_node_network_one_per_node(control_plane: ControlPlane, helm: Path) -> None:
    answers = created(control_plane, render(helm, values=(CHART / "ci" / "custom-cni-values.yaml",)))
    webhook = pod(answers, "webhook")
    assert webhook["hostNetwork"] is True
    assert webhook["dnsPolicy"] == "ClusterFirstWithHostNet"
    [port] = webhook["containers"][0]["ports"]
    # On the node's network the container port is the node's port: the one the control plane dials.
    assert port["containerPort"] == 10260
    assert "--port=10260" in args(webhook)
    [term] = webhook["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == {"labelSelector": {"matchLabels": WEBHOOK_LABELS}, "topologyKey": "kubernetes.io/hostname"}
    [deployment] = [obj for (kind, name), obj in answers.items() if kind == "Deployment" and name.endswith("webhook")]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    controller = pod(answers, "controller")
    assert not controller.get("hostNetwork"), "only the webhook must be reachable from the control plane"


def test_custom_cni_yields_to_the_users_update_strategy(helm: Path) -> None:
    values = CHART / "ci" / "custom-cni-values.yaml"
    command = [str(helm), "template", "ecr-pullthrough", str(CHART), "--values", str(values)]
    command += ["--set", "webhook.updateStrategy.type=Recreate", "--show-only", "templates/webhook-deployment.yaml"]
    rendered = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    [deployment] = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    # PyYAML keeps the last of duplicate keys: count them in the text.
    assert rendered.split("kind: Deployment", 1)[1].split("\n---", 1)[0].count("\n  strategy:") == 1


def test_custom_cni_keeps_the_users_affinity(control_plane: ControlPlane, helm: Path) -> None:
    node_affinity = {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}}
    ]}  # fmt: skip
    spec_with_affinity = render(
        helm,
        values=(CHART / "ci" / "custom-cni-values.yaml",),
        set_values={
            "webhook.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight": "1",
            "webhook.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference"
            ".matchExpressions[0].key": "pool",
            "webhook.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference"
            ".matchExpressions[0].operator": "In",
            "webhook.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference"
            ".matchExpressions[0].values[0]": "system",
        },
    )
    answers = created(control_plane, spec_with_affinity)
    affinity = pod(answers, "webhook")["affinity"]
    assert affinity["nodeAffinity"] == node_affinity
    assert len(affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]) == 1


@pytest.mark.parametrize(
    ("settings", "budget"),
    [
        ({}, {"minAvailable": 1}),
        ({"webhook.replicas": "1"}, None),
        ({"webhook.replicas": "1", "webhook.podDisruptionBudget.maxUnavailable": "1"}, {"maxUnavailable": 1}),
        ({"webhook.replicas": "2", "webhook.podDisruptionBudget.minAvailable": "2"}, None),
        ({"webhook.replicas": "2", "webhook.podDisruptionBudget.minAvailable": "50%"}, {"minAvailable": "50%"}),
        ({"webhook.replicas": "2", "webhook.podDisruptionBudget.minAvailable": "51%"}, None),
        ({"webhook.replicas": "3", "webhook.podDisruptionBudget.maxUnavailable": "34%"}, {"maxUnavailable": "34%"}),
        ({"webhook.podDisruptionBudget.enabled": "false"}, None),
    ],
)
def test_the_budget_is_rendered_only_when_a_drain_can_satisfy_it(
    control_plane: ControlPlane, helm: Path, settings: dict[str, str], budget: dict[str, Any] | None
) -> None:
    answers = created(control_plane, render(helm, set_values=settings))
    budgets = [obj["spec"] for (kind, _), obj in answers.items() if kind == "PodDisruptionBudget"]
    if budget is None:
        assert budgets == []
    else:
        [spec] = budgets
        assert {key: spec[key] for key in ("minAvailable", "maxUnavailable") if spec.get(key) is not None} == budget
        assert spec["selector"] == {"matchLabels": WEBHOOK_LABELS}


def test_one_replica_renders_no_budget(control_plane: ControlPlane, helm: Path) -> None:
    answers = created(control_plane, render(helm, values=(CHART / "ci" / "one-replica-values.yaml",)))
    assert not [kind for kind, _ in answers if kind == "PodDisruptionBudget"]
    assert {obj["spec"]["replicas"] for (kind, _), obj in answers.items() if kind == "Deployment"} == {1}


def test_a_private_image_is_used_by_both_processes(control_plane: ControlPlane, helm: Path) -> None:
    answers = created(control_plane, render(helm, values=(CHART / "ci" / "private-image-values.yaml",)))
    for component in ("webhook", "controller"):
        [container] = pod(answers, component)["containers"]
        assert container["image"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/ecr-pullthrough:0.1.0-custom.1"
        assert container["imagePullPolicy"] == "Always"


def test_drain_seconds_zero_renders_no_hook(helm: Path) -> None:
    objects = render(helm, set_values={"webhook.drainSeconds": "0"})
    [webhook] = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("webhook")]
    assert "lifecycle" not in webhook["spec"]["template"]["spec"]["containers"][0]
