"""Never worse than no webhook: pods the webhook does not rewrite pull from Docker Hub (issue 16, test 5).

Docker Hub is the plain-HTTP upstream here (containerd's hosts.toml for docker.io).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.fixtures_webhook import create_pod, new_namespace
from tests.node.bed import NodeBed
from tests.node.pods import (
    any_since,
    container_log,
    docker_hub_verified_in,
    log_mark,
    node_pod,
    verified,
    wait_phase,
    wait_verified,
)
from tests.support import wait_for

# The webhook re-reads its status file at most once a second; the bed copies the ConfigMap every 0.5 s.
STATUS_PROPAGATION_SECONDS = 30.0


def runs_unchanged_from_docker_hub(bed: NodeBed, prefix: str) -> None:
    mark = log_mark(bed)
    namespace = new_namespace(bed.plane, prefix)
    with bed.plane.api_client() as api:
        stored = create_pod(api, namespace, node_pod("direct", {"main": "hello:1"}))
    assert stored["spec"]["containers"][0]["image"] == "hello:1"
    assert not stored["spec"].get("imagePullSecrets")

    done = wait_phase(bed, namespace, "direct", "Succeeded")

    assert container_log(namespace, done, "main") == "hello from library/hello:1"
    assert any_since(bed, mark) == [], "nothing of this pod came through the ECR stand-in"


@pytest.fixture
def docker_hub_unverified(bed: NodeBed) -> Iterator[None]:
    """The pull-through rule for Docker Hub is gone: the controller unverifies it, the webhook stops rewriting."""
    wait_verified(bed)
    rule = bed.ecr.rules.pop("docker-hub")
    try:
        wait_for(lambda: not verified(bed), timeout=60, what="the controller to unverify Docker Hub")
        wait_for(
            lambda: not docker_hub_verified_in(bed.status_path.read_text(), bed.pull_secret_mode),
            timeout=STATUS_PROPAGATION_SECONDS,
            what="the webhook's status file to say so",
        )
        yield
    finally:
        bed.ecr.rules["docker-hub"] = rule
        wait_verified(bed)


def test_with_docker_hub_unverified_the_pod_is_pulled_from_docker_hub_and_runs(
    bed: NodeBed, docker_hub_unverified: None
) -> None:
    runs_unchanged_from_docker_hub(bed, "node-unverified")


def test_with_the_webhook_stopped_the_pod_is_pulled_from_docker_hub_and_runs(bed: NodeBed) -> None:
    wait_verified(bed)
    bed.stop_webhook()  # still registered: the API server's call fails and failurePolicy Ignore admits the pod
    try:
        runs_unchanged_from_docker_hub(bed, "node-no-webhook")
    finally:
        bed.restart_webhook()
