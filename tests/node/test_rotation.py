"""Token rotation and a brand-new namespace, through the real node (issue 16, tests 3 and 4)."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.fixtures_webhook import create_pod, new_namespace
from tests.node.bed import PULL_SECRET, RELEASE_NAMESPACE, NodeBed
from tests.node.pods import (
    container_log,
    log_mark,
    node_pod,
    our_password,
    pulls_since,
    wait_phase,
    wait_verified,
)
from tests.support import wait_for

SHORT_LIFE_SECONDS = 6.0  # the controller refreshes half-way: 3 s after the fetch (its floor is 1 s here)
TWELVE_HOURS = 12 * 3600.0


def managed_passwords(bed: NodeBed, namespaces: list[str]) -> set[str]:
    return {our_password(bed, namespace) for namespace in namespaces}


def test_a_rotated_token_reaches_every_namespace_and_the_next_pull_uses_it(bed: NodeBed) -> None:
    wait_verified(bed)
    namespaces = [new_namespace(bed.plane, "node-rotate") for _ in range(3)]
    before = managed_passwords(bed, namespaces)
    # A new leader with no token to adopt fetches one at once; this one lives briefly, so the controller's
    # own refresh timer (not a restart) brings the next, which lives the usual 12 hours.
    issued_before = bed.ecr.tokens_issued
    bed.ecr.lifetime_seconds = SHORT_LIFE_SECONDS
    bed.stop_controller()
    with bed.plane.api_client() as api:
        try:
            client.CoreV1Api(api).delete_namespaced_secret(PULL_SECRET, RELEASE_NAMESPACE)
        except ApiException as error:
            if error.status != 404:
                raise
    bed.start_controller()
    try:
        short = wait_for(
            lambda: bed.ecr.tokens_issued if bed.ecr.tokens_issued > issued_before else None,
            timeout=30,
            what="a token fetched by the new leader",
        )
        bed.ecr.lifetime_seconds = TWELVE_HOURS
        refreshed = wait_for(
            lambda: bed.ecr.tokens_issued if bed.ecr.tokens_issued > short else None,
            timeout=30,
            what="the controller to refresh the short-lived token",
        )
    finally:
        bed.ecr.lifetime_seconds = TWELVE_HOURS
    new_password = bed.ecr.password(refreshed)
    wait_for(
        lambda: managed_passwords(bed, namespaces) == {new_password},
        timeout=60,
        what="every namespace to hold the refreshed token",
    )
    bed.ecr.revoke(*range(1, refreshed))
    assert not before & {new_password}

    mark = log_mark(bed)
    with bed.plane.api_client() as api:
        create_pod(api, namespaces[0], node_pod("after-rotation", {"main": "hello:1"}))
    done = wait_phase(bed, namespaces[0], "after-rotation", "Succeeded")

    assert container_log(namespaces[0], done, "main") == "hello from library/hello:1"
    pulls = pulls_since(bed, mark, "/v2/docker-hub/library/hello")
    assert ("AWS", refreshed, 200) in pulls
    assert {(user, token) for user, token, _ in pulls if user is not None} == {("AWS", refreshed)}


def test_a_pod_created_right_after_its_namespace_ends_up_running(bed: NodeBed) -> None:
    wait_verified(bed)
    mark = log_mark(bed)
    namespace = new_namespace(bed.plane, "node-fresh")
    with bed.plane.api_client() as api:  # no wait for the Secret: the kubelet may try before it exists
        create_pod(api, namespace, node_pod("first", {"main": "hello:1"}))

    done = wait_phase(bed, namespace, "first", "Succeeded")

    assert container_log(namespace, done, "main") == "hello from library/hello:1"
    token = bed.ecr.token_number(our_password(bed, namespace))
    assert ("AWS", token, 200) in pulls_since(bed, mark, "/v2/docker-hub/library/hello")
