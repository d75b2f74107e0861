"""Pods for the bed's node, and waiting on what the node and the controller do with them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.fixtures_webhook import read_pod
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
    return text is not None and docker_hub_verified_in(text, bed.pull_secret_mode)


def docker_hub_verified_in(text: str, pull_secret_mode: str) -> bool:
    """Whether an upstream status document (the ConfigMap's, or the webhook's file) says Docker Hub is verified,
    in the given pull-secret mode (the webhook trusts no other), and not degraded (the pull-outcome guard)."""
    return any(
        s.upstream == "docker.io" and s.verified and s.degraded_since is None and s.pull_secret_mode == pull_secret_mode
        for s in StatusDocument.parse(text).upstreams
    )


def wait_verified(bed: NodeBed) -> None:
    """Until the controller has verified Docker Hub in the bed's mode (not degraded), and the webhook's status
    file says so: from then on the webhook rewrites Docker Hub images."""
    wait_for(lambda: verified(bed), timeout=60, what="the controller to verify Docker Hub through the stand-in")

    def in_the_file() -> bool:
        path = bed.status_path
        return path.exists() and docker_hub_verified_in(path.read_text(), bed.pull_secret_mode)

    wait_for(in_the_file, timeout=30, what="the webhook's status file to say Docker Hub is verified")


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


def log_mark(bed: NodeBed) -> int:
    """Where the stand-in's log stands now: requests after it belong to what follows."""
    return len(bed.standin.requests)


def pulls_since(bed: NodeBed, mark: int, repository: str) -> list[tuple[str | None, int | None, int]]:
    """(user, token, status) of each request containerd made for `repository` (a `/v2/...` path) since `mark`.

    With `imagePullPolicy: Always` and the image already in containerd, a pull is a HEAD of the tag's manifest
    and nothing more; the controller's probe HEADs one too, so containerd's are told apart by their User-Agent.
    """
    return [
        (r.user, r.token, r.status)
        for r in bed.standin.requests[mark:]
        if r.agent.startswith("containerd/") and r.path.startswith(f"{repository}/")
    ]


def any_since(bed: NodeBed, mark: int) -> list[str]:
    """Paths containerd asked the stand-in for since `mark`."""
    return [r.path for r in bed.standin.requests[mark:] if r.agent.startswith("containerd/")]
