"""The pull-outcome guard on the real API server, under the chart's RBAC: kubelet pull Events in, `degraded` out.

The Events are written as a kubelet writes them (core/v1, on the pod, `source.host` the node),
with the admin client; the real-node test (tests/node/test_pull_guard.py) has a real kubelet
produce them.
"""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.controllers import controller_process
from tests.e2e.controlplane import ControlPlane
from tests.e2e.test_controller import (  # noqa: F401 (fixtures)
    FAST,
    NO_WRITE_LIMIT,
    STATUS_CONFIGMAP,
    core,
    ecr,
    kubeconfig,
    no_adoptable_token,
    published,
)
from tests.e2e.test_controller_verdicts import entry
from tests.fake_ecr import FakeEcr
from tests.support import wait_for
from webhook.core.upstream_status import StatusDocument, verification

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
GUARD = (
    *FAST,
    *NO_WRITE_LIMIT,  # its first verification waits for a pass over every namespace
    "--upstream-status-configmap",
    STATUS_CONFIGMAP,
    "--verify-seconds",
    "1",
    "--pull-guard-window-seconds=120",
    "--pull-guard-min-failures=3",
    "--pull-guard-min-images=2",
    "--pull-guard-min-pods=2",
    "--pull-guard-quiet-seconds=6",
    "--pull-guard-trial-one-in=4",
)
FORBIDDEN = (
    'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed to resolve reference '
    '"{image}": pulling from host ' + REGISTRY + " failed with status code [manifests 1]: 403 Forbidden"
)
NOT_FOUND = 'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": {image}: not found'


def kubelet_event(core: client.CoreV1Api, pod: str, node: str, reason: str, message: str) -> None:  # noqa: F811
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    core.create_namespaced_event(
        "default",
        {
            "metadata": {"name": f"{pod}.{uuid.uuid4().hex[:12]}", "namespace": "default"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": "default"},
            "reason": reason,
            "message": message,
            "type": "Warning" if reason == "Failed" else "Normal",
            "source": {"component": "kubelet", "host": node},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        },
    )


def failed_pull(core: client.CoreV1Api, pod: str, node: str, image: str, error: str = FORBIDDEN) -> None:  # noqa: F811
    kubelet_event(core, pod, node, "Failed", f'Failed to pull image "{image}": {error.format(image=image)}')


def cached(name: str) -> str:
    return f"{REGISTRY}/docker-hub/library/{name}"


def rewrites_docker_hub(core: client.CoreV1Api) -> bool:  # noqa: F811
    document = StatusDocument.parse(json.dumps(published(core)))
    now = datetime.datetime.now(datetime.UTC)
    return "docker.io" in verification(document, now, datetime.timedelta(hours=1)).verified


def degraded_events(core: client.CoreV1Api) -> list[Any]:  # noqa: F811
    events = core.list_namespaced_event("ecr-pullthrough", field_selector=f"involvedObject.name={STATUS_CONFIGMAP}")
    return [e for e in events.items if e.reason == "UpstreamDegraded"]


def test_failed_pulls_of_several_images_degrade_docker_hub_until_a_quiet_period_passes(
    control_plane: ControlPlane,
    kubeconfig: Path,  # noqa: F811
    core: client.CoreV1Api,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
) -> None:
    with controller_process(kubeconfig, ecr, tmp_path, "a", *GUARD) as running:
        # This controller's own verdict (the ConfigMap may still hold an earlier test's).
        wait_for(
            lambda: running.metric("ecr_pullthrough_upstream_verified", upstream="docker.io") == 1,
            timeout=60,
            what="docker.io verified",
        )
        assert rewrites_docker_hub(core)
        # A typo'd image fails on many pods and nodes: one image is not a bad cache.
        for i in range(8):
            failed_pull(core, f"typo-{i}", f"node-{i % 2}", cached("ngnix:1.27"), NOT_FOUND)
        wait_for(
            lambda: running.metric("ecr_pullthrough_pull_outcomes_total", upstream="docker.io", outcome="failed") == 8,
            timeout=30,
            what="the guard to count the typo's eight failed pulls",
        )
        assert "degradedSince" not in entry(core, "docker.io")
        assert rewrites_docker_hub(core)

        # The cache refuses the node's credential: two more images fail on two more pods.
        failed_pull(core, "web-1", "node-a", cached("nginx:1.27"))
        failed_pull(core, "cache-1", "node-b", cached("redis:7.2"))
        degraded = wait_for(
            lambda: (e := entry(core, "docker.io")).get("degradedSince") and e, timeout=30, what="docker.io degraded"
        )
        assert degraded["verified"] is True, "degraded is not unverified: the rule and credential still verify"
        assert "403 Forbidden" in degraded["degradedReason"]
        assert "pulls through the cache failed" in degraded["degradedReason"]
        assert degraded["trialOneIn"] == 4
        assert not rewrites_docker_hub(core), "the webhook must treat degraded like unverified"
        assert running.metric("ecr_pullthrough_upstream_degraded", upstream="docker.io") == 1
        body = json.loads(running.get("/readyz")[1])
        assert any("degraded since" in p for p in body["problems"])
        wait_for(lambda: degraded_events(core), timeout=30, what="an UpstreamDegraded Event on the status ConfigMap")

        # A pull through the cache works again (a trial pod), and none fails for the quiet period (6 s):
        # rewriting resumes.
        kubelet_event(
            core,
            "trial-1",
            "node-a",
            "Pulled",
            f'Successfully pulled image "{cached("nginx:1.27")}" in 1.1s (1.1s including waiting).',
        )
        wait_for(
            lambda: "degradedSince" not in entry(core, "docker.io"),
            timeout=60,
            interval=0.5,
            what="docker.io to recover after the quiet period",
        )
        assert rewrites_docker_hub(core)
        assert running.metric("ecr_pullthrough_upstream_degraded", upstream="docker.io") == 0
