"""An ephemeral container added to a running pod is rewritten and pulled through the cache (issue 16, test 6)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.e2e.fixtures_webhook import create_pod, new_namespace, pull_secrets
from tests.node.bed import PULL_SECRET, NodeBed
from tests.node.pods import (
    REWRITTEN,
    RUN_TIMEOUT,
    container_log,
    log_mark,
    node_pod,
    our_password,
    phase,
    pulls_since,
    wait_phase,
    wait_verified,
)
from tests.support import wait_for


def test_an_ephemeral_container_is_rewritten_and_pulled_through_the_stand_in(bed: NodeBed) -> None:
    wait_verified(bed)
    namespace = new_namespace(bed.plane, "node-debug")
    token = bed.ecr.token_number(our_password(bed, namespace))
    with bed.plane.api_client() as api:
        stored = create_pod(api, namespace, node_pod("long", {"main": "pause:3"}))
    assert {"name": PULL_SECRET} in pull_secrets(stored)
    wait_phase(bed, namespace, "long", "Running")

    mark = log_mark(bed)
    debugger = {"name": "debugger", "image": "hello:1", "imagePullPolicy": "Always"}
    with bed.plane.api_client() as api:
        core = client.CoreV1Api(api)
        core.patch_namespaced_pod_ephemeralcontainers("long", namespace, {"spec": {"ephemeralContainers": [debugger]}})

    def finished() -> dict[str, Any] | None:
        stored = phase(bed, namespace, "long")
        statuses = (stored.get("status") or {}).get("ephemeralContainerStatuses") or []
        terminated = (statuses[0].get("state") or {}).get("terminated") if statuses else None
        return stored if terminated else None

    done = wait_for(finished, timeout=RUN_TIMEOUT, interval=0.5, what="the ephemeral container to run and exit")

    assert done["spec"]["ephemeralContainers"][0]["image"] == f"{REWRITTEN}/library/hello:1"
    assert done["status"]["ephemeralContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert container_log(namespace, done, "debugger") == "hello from library/hello:1"
    assert ("AWS", token, 200) in pulls_since(bed, mark, "/v2/docker-hub/library/hello")
    with bed.plane.api_client() as api:
        client.CoreV1Api(api).delete_namespaced_pod("long", namespace, grace_period_seconds=0)
