"""Pods pulled through the ECR stand-in by a real kubelet and containerd, and run (issue 16).

Every pod uses `imagePullPolicy: Always`, so an image already in containerd
cannot make a test pass or fail for the wrong reason, and each test asserts
from the stand-in's log how its pull happened.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.fixtures_webhook import create_pod, new_namespace, pull_secrets, read_pod
from tests.node.bed import NODE, PULL_SECRET, RELEASE_NAMESPACE, STATUS_CONFIGMAP, NodeBed
from tests.node.enter import ECR_HOST
from tests.support import wait_for
from webhook.core.upstream_status import StatusDocument

# Generous: a pull, a sandbox and a run take seconds warm; the kubelet's backoff and a loaded CI runner do not.
RUN_TIMEOUT = 120.0
REWRITTEN = f"{ECR_HOST}/docker-hub"


def node_pod(name: str, containers: dict[str, str], init: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod the bed's node can run: host network (no CNI), bound to the node (no scheduler), no token volume."""

    def container(n: str, image: str) -> dict[str, Any]:
        return {"name": n, "image": image, "imagePullPolicy": "Always"}

    spec: dict[str, Any] = {
        "nodeName": NODE,
        "hostNetwork": True,
        "restartPolicy": "Never",
        # No controller-manager publishes kube-root-ca.crt, which the token volume needs.
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 1,
        "containers": [container(n, i) for n, i in containers.items()],
    }
    if init:
        spec["initContainers"] = [container(n, i) for n, i in init.items()]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def verified(bed: NodeBed) -> bool:
    with bed.plane.api_client() as api:
        data = client.CoreV1Api(api).read_namespaced_config_map(STATUS_CONFIGMAP, RELEASE_NAMESPACE).data or {}
    text = data.get("status.json")
    return text is not None and any(
        s.upstream == "docker.io" and s.verified for s in StatusDocument.parse(text).upstreams
    )


def wait_verified(bed: NodeBed) -> None:
    wait_for(lambda: verified(bed), timeout=60, what="the controller to verify Docker Hub through the stand-in")


def our_password(bed: NodeBed, namespace: str) -> str:
    def password() -> str | None:
        with bed.plane.api_client() as api:
            try:
                found = client.CoreV1Api(api).read_namespaced_secret(PULL_SECRET, namespace)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
        config = json.loads(base64.b64decode((found.data or {})[".dockerconfigjson"]))
        return str(config["auths"][ECR_HOST]["password"])

    return wait_for(password, timeout=30, what=f"the controller's pull secret in {namespace}")


def phase(bed: NodeBed, namespace: str, name: str) -> dict[str, Any]:
    with bed.plane.api_client() as api:
        return read_pod(api, namespace, name)


def wait_phase(bed: NodeBed, namespace: str, name: str, wanted: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        stored = phase(bed, namespace, name)
        current = (stored.get("status") or {}).get("phase")
        if current == "Failed" and wanted != "Failed":
            raise AssertionError(f"pod {namespace}/{name} failed: {stored.get('status')}")
        return stored if current == wanted else None

    return wait_for(reached, timeout=RUN_TIMEOUT, interval=0.5, what=f"pod {namespace}/{name} to be {wanted}")


def container_log(namespace: str, pod: dict[str, Any], container: str) -> str:
    """What the container printed, from the kubelet's pod log directory (CRI format: time stream tag text)."""
    folder = Path("/var/log/pods") / f"{namespace}_{pod['metadata']['name']}_{pod['metadata']['uid']}" / container
    lines = (folder / "0.log").read_text().splitlines()
    return "\n".join(line.split(" ", 3)[3] for line in lines)


def test_a_docker_hub_image_is_pulled_through_the_cache_with_our_token_and_runs(bed: NodeBed) -> None:
    wait_verified(bed)
    namespace = new_namespace(bed.plane, "node-runs")
    password = our_password(bed, namespace)
    token = bed.ecr.token_number(password)
    assert token is not None
    body = node_pod("hello", {"main": "hello:1", "org": "someorg/hello:1"}, init={"setup": "hello:1"})
    start = len(bed.standin.requests)
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
    for path in ("/v2/docker-hub/library/hello/manifests/1", "/v2/docker-hub/someorg/hello/manifests/1"):
        served = [r for r in bed.standin.requests[start:] if r.path == path and r.status == 200]
        assert served, f"no successful pull of {path}: {bed.standin.requests[start:]}"
        assert {(r.user, r.token) for r in served} == {("AWS", token)}
    blobs = [r for r in bed.standin.requests[start:] if "/blobs/" in r.path and r.status == 200]
    assert blobs, "the layers came through the stand-in too"


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
    start = len(bed.standin.requests)
    with bed.plane.api_client() as api:
        client.CoreV1Api(api).replace_namespaced_secret(PULL_SECRET, namespace, foreign)
        stored = create_pod(api, namespace, node_pod("refused", {"main": "hello:1"}))
    assert stored["spec"]["containers"][0]["image"] == f"{REWRITTEN}/library/hello:1"

    def refused() -> str | None:
        statuses = (phase(bed, namespace, "refused").get("status") or {}).get("containerStatuses") or []
        reason = ((statuses[0].get("state") or {}).get("waiting") or {}).get("reason") if statuses else None
        return reason if reason in ("ErrImagePull", "ImagePullBackOff") else None

    wait_for(refused, timeout=RUN_TIMEOUT, interval=0.5, what="the pull to be refused")
    attempts = [r for r in bed.standin.requests[start:] if r.path.startswith("/v2/docker-hub/library/hello/")]
    assert attempts, "the kubelet tried the stand-in"
    # Asked with the foreign secret's password (user AWS, no token of the fake's) and refused; nothing was served.
    assert {(r.user, r.token, r.status) for r in attempts} <= {(None, None, 401), ("AWS", None, 401)}
    assert ("AWS", None, 401) in {(r.user, r.token, r.status) for r in attempts}
    assert phase(bed, namespace, "refused")["status"]["phase"] == "Pending"
