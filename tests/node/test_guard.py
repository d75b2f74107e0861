"""Never worse than no webhook, on real pulls (issue 21): a cache that fails the node but not the probe.

The stand-in refuses containerd's requests with 403 (as ECR refuses a node role that may not use
the repository's KMS key) while the controller's probe still passes, so verification alone would
keep rewriting. The kubelet's own `Failed` Events must degrade Docker Hub; the next pod then keeps
its original reference and runs from the upstream; once the stand-in serves the node again and a
quiet period passes, rewriting resumes. These tests restart the bed's controller with the guard on,
small thresholds and no trial pods (so the next pod's fate is certain), and restore it after.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.fixtures_webhook import create_pod, new_namespace
from tests.node.bed import PULL_SECRET, RELEASE_NAMESPACE, STATUS_CONFIGMAP, NodeBed
from tests.node.pods import REWRITTEN, any_since, container_log, log_mark, node_pod, wait_phase, wait_verified
from tests.node.test_fallback import STATUS_PROPAGATION_SECONDS
from tests.support import wait_for


def docker_hub(bed: NodeBed) -> dict[str, Any]:
    with bed.plane.api_client() as api:
        data = client.CoreV1Api(api).read_namespaced_config_map(STATUS_CONFIGMAP, RELEASE_NAMESPACE).data or {}
    return dict(json.loads(data.get("status.json") or "{}").get("upstreams", {}).get("docker.io") or {})


def webhook_sees_degraded(bed: NodeBed) -> bool:
    entry = json.loads(bed.status_path.read_text()).get("upstreams", {}).get("docker.io") or {}
    return bool(entry.get("degradedSince"))


def failed_pull_events(bed: NodeBed, namespace: str) -> list[Any]:
    with bed.plane.api_client() as api:
        events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return [e for e in events if e.reason == "Failed" and (e.message or "").startswith("Failed to pull image")]


GUARD = (
    "--pull-guard=true",
    "--pull-guard-window-seconds=120",
    "--pull-guard-min-failures=2",
    "--pull-guard-min-images=2",
    "--pull-guard-min-pods=2",
    "--pull-guard-quiet-seconds=10",
    "--pull-guard-trial-one-in=0",
)


@pytest.fixture
def guarded(bed: NodeBed) -> Iterator[None]:
    """The bed's controller with the pull-outcome guard on; the usual one again afterwards."""
    bed.stop_controller()
    bed.start_controller(*GUARD)
    try:
        wait_verified(bed)
        yield
    finally:
        bed.stop_controller()
        bed.start_controller()
        wait_verified(bed)  # the usual controller's status, not degraded, reached the webhook


@pytest.fixture
def node_refused(bed: NodeBed, guarded: None) -> Iterator[None]:
    bed.standin.refuse_agent = "containerd/"
    try:
        yield
    finally:
        bed.standin.refuse_agent = None


# First: the guard lists the Events of the last window at start, and this one must not see the
# failures the next test causes on purpose.
def test_an_image_that_does_not_exist_fails_on_many_pods_without_degrading_docker_hub(
    bed: NodeBed, guarded: None
) -> None:
    failed_before = bed.controller.metric("ecr_pullthrough_pull_outcomes_total", upstream="docker.io", outcome="failed")
    namespace = new_namespace(bed.plane, "node-typo")
    with bed.plane.api_client() as api:
        for i in range(3):
            stored = create_pod(api, namespace, node_pod(f"typo-{i}", {"main": "helo:1"}))
            assert stored["spec"]["containers"][0]["image"].startswith(REWRITTEN)
    wait_for(
        lambda: (
            bed.controller.metric("ecr_pullthrough_pull_outcomes_total", upstream="docker.io", outcome="failed")
            >= failed_before + 4
        ),
        timeout=120,
        what="the guard to count the typo's failed pulls from three pods",
    )
    entry = docker_hub(bed)
    assert "degradedSince" not in entry, entry
    assert entry["verified"] is True
    with bed.plane.api_client() as api:
        for i in range(3):
            client.CoreV1Api(api).delete_namespaced_pod(f"typo-{i}", namespace, grace_period_seconds=0)


def test_pulls_refused_to_the_node_degrade_docker_hub_and_the_next_pod_runs_from_docker_hub(
    bed: NodeBed, node_refused: None
) -> None:
    namespace = new_namespace(bed.plane, "node-guard")
    with bed.plane.api_client() as api:
        for name, image in (("web", "hello:1"), ("worker", "someorg/hello:1")):
            stored = create_pod(api, namespace, node_pod(name, {"main": image}))
            assert stored["spec"]["containers"][0]["image"].startswith(REWRITTEN)
    first = wait_for(
        lambda: sorted(e.last_timestamp for e in failed_pull_events(bed, namespace))[:1],
        timeout=120,
        what="the kubelet to report a failed pull",
    )[0]
    degraded = wait_for(
        lambda: (e := docker_hub(bed)).get("degradedSince") and e, timeout=120, what="Docker Hub degraded"
    )
    since = datetime.datetime.fromisoformat(degraded["degradedSince"])
    print(
        f"first failed pull {first.isoformat()}, degraded {since.isoformat()}: {(since - first).total_seconds():.1f} s"
    )
    assert "pulls through the cache failed" in degraded["degradedReason"]
    # (Its sample is the latest failure, which may be the previous test's image: the window holds both.)
    assert "403 Forbidden" in bed.controller.log(), "the guard logged the node's refused pulls"
    assert degraded["verified"] is True, "the probe still passes: only the nodes' pulls fail"
    wait_for(lambda: webhook_sees_degraded(bed), timeout=STATUS_PROPAGATION_SECONDS, what="the webhook's status file")

    mark = log_mark(bed)
    with bed.plane.api_client() as api:
        stored = create_pod(api, namespace, node_pod("next", {"main": "hello:1"}))
    assert stored["spec"]["containers"][0]["image"] == "hello:1", "a degraded upstream is not rewritten"
    done = wait_phase(bed, namespace, "next", "Succeeded")
    assert container_log(namespace, done, "main") == "hello from library/hello:1"
    assert any_since(bed, mark) == [], "the next pod did not go near the cache"

    # The cache serves the node again. A pod rewritten earlier (its image already the cache's) now pulls; after
    # the quiet period (10 s here) without a failed pull, Docker Hub recovers.
    bed.standin.refuse_agent = None
    earlier = node_pod("earlier", {"main": f"{REWRITTEN}/library/hello:1"})
    earlier["spec"]["imagePullSecrets"] = [{"name": PULL_SECRET}]  # as the webhook gave it then
    with bed.plane.api_client() as api:
        create_pod(api, namespace, earlier)
    for name in ("web", "worker"):  # their retries would keep failing the window's quiet: gone
        with bed.plane.api_client() as api:
            client.CoreV1Api(api).delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    recovered_from = time.monotonic()
    wait_for(lambda: "degradedSince" not in docker_hub(bed), timeout=120, what="Docker Hub to recover")
    print(f"recovered {time.monotonic() - recovered_from:.1f} s after the stand-in served the node again")
    wait_for(lambda: not webhook_sees_degraded(bed), timeout=STATUS_PROPAGATION_SECONDS, what="the webhook to see it")
    with bed.plane.api_client() as api:
        stored = create_pod(api, namespace, node_pod("after", {"main": "hello:1"}))
    assert stored["spec"]["containers"][0]["image"].startswith(REWRITTEN)
    done = wait_phase(bed, namespace, "after", "Succeeded")
    assert container_log(namespace, done, "main") == "hello from library/hello:1"
