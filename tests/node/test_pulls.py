"""Pods pulled through the ECR stand-in by a real kubelet and containerd, and run (issue 16, tests 1 and 2).

Every pod uses `imagePullPolicy: Always`, so an image already in containerd
cannot make a test pass or fail for the wrong reason, and each test asserts
from the stand-in's log how its pull happened.
"""

from __future__ import annotations

import base64
import json

from kubernetes import client

from tests.e2e.fixtures_webhook import create_pod, new_namespace, pull_secrets
from tests.node.bed import PULL_SECRET, NodeBed
from tests.node.enter import ECR_HOST
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


def test_a_docker_hub_image_is_pulled_through_the_cache_with_our_token_and_runs(bed: NodeBed) -> None:
    wait_verified(bed)
    namespace = new_namespace(bed.plane, "node-runs")
    password = our_password(bed, namespace)
    token = bed.ecr.token_number(password)
    assert token is not None
    body = node_pod("hello", {"main": "hello:1", "org": "someorg/hello:1"}, init={"setup": "hello:1"})
    start = log_mark(bed)
    with bed.plane.api_client() as api:
        stored = create_pod(api, namespace, body)
    assert [c["image"] for c in stored["spec"]["containers"]] == [
        f"{REWRITTEN}/library/hello:1",
        f"{REWRITTEN}/someorg/hello:1",
    ]
    assert stored["spec"]["initContainers"][0]["image"] == f"{REWRITTEN}/library/hello:1"
    assert {"name": PULL_SECRET} in pull_secrets(stored)

    done = wait_phase(bed, namespace, "hello", "Succeeded")

    assert container_log(namespace, done, "setup") == "hello from library/hello:1"
    assert container_log(namespace, done, "main") == "hello from library/hello:1"
    assert container_log(namespace, done, "org") == "hello from someorg/hello:1"
    for repository in ("/v2/docker-hub/library/hello", "/v2/docker-hub/someorg/hello"):
        pulls = pulls_since(bed, start, repository)
        assert ("AWS", token, 200) in pulls, f"containerd's requests for {repository}: {pulls}"
        assert {(user, number) for user, number, _ in pulls if user is not None} == {("AWS", token)}


def test_a_foreign_wrong_secret_makes_the_pull_fail(bed: NodeBed) -> None:
    wait_verified(bed)
    namespace = new_namespace(bed.plane, "node-foreign")
    our_password(bed, namespace)
    wrong = {
        "auths": {
            ECR_HOST: {
                "username": "AWS",
                "password": "not-a-token",
                "auth": base64.b64encode(b"AWS:not-a-token").decode(),
            }
        }
    }
    foreign = client.V1Secret(
        metadata=client.V1ObjectMeta(name=PULL_SECRET),  # no managed-by label: not ours, the controller leaves it
        type="kubernetes.io/dockerconfigjson",
        data={".dockerconfigjson": base64.b64encode(json.dumps(wrong).encode()).decode()},
    )
    start = log_mark(bed)
    with bed.plane.api_client() as api:
        client.CoreV1Api(api).replace_namespaced_secret(PULL_SECRET, namespace, foreign)
        stored = create_pod(api, namespace, node_pod("refused", {"main": "hello:1"}))
    assert stored["spec"]["containers"][0]["image"] == f"{REWRITTEN}/library/hello:1"

    def refused() -> str | None:
        statuses = (phase(bed, namespace, "refused").get("status") or {}).get("containerStatuses") or []
        reason = ((statuses[0].get("state") or {}).get("waiting") or {}).get("reason") if statuses else None
        return reason if reason in ("ErrImagePull", "ImagePullBackOff") else None

    wait_for(refused, timeout=RUN_TIMEOUT, interval=0.5, what="the pull to be refused")
    attempts = pulls_since(bed, start, "/v2/docker-hub/library/hello")
    # Asked with the foreign secret's password (user AWS, no token of the fake's) and refused; nothing was served.
    assert ("AWS", None, 401) in attempts
    assert {status for _, _, status in attempts} == {401}
    assert phase(bed, namespace, "refused")["status"]["phase"] == "Pending"
