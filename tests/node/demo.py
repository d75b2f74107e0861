"""`make demo-cluster`: the whole product on one machine, on the node test bed.

It starts what the node tests stand on (tests/node/bed.py): etcd and kube-apiserver, a node
(containerd and a kubelet) that pulls through the ECR stand-in, the fake ECR API, and the
controller and webhook configured as the chart configures them. Then it creates a namespace with
a few pods (an official image, an organisation image, a digest-pinned image, a quay.io image and an
opted-out pod) and prints each image before and after with the webhook's reason, the pull Secret
the controller wrote (token redacted), the upstream status, and each pod's phase.

It stays up until Ctrl-C (or SIGTERM), printing how to reach it with kubectl; `--once` exits after
printing. Everything it started stops whatever happens: the bed unwinds in order, and
tests/node/enter.py kills anything left in the private namespace and unmounts its files.

Usage (root, Linux): python -m tests.node.enter python -m tests.node.demo [--once]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.fixtures_webhook import admissions, new_namespace
from tests.node.bed import NODE, PULL_SECRET, RELEASE_NAMESPACE, STATUS_CONFIGMAP, UPSTREAM, NodeBed, node_bed
from tests.node.enter import ECR_HOST, INSIDE
from tests.node.pods import node_pod, wait_verified
from tests.support import wait_for
from webhook.core.upstream_status import StatusDocument

SETTLE_TIMEOUT = 120.0
OPT_OUT = {"ecr-pullthrough/skip": "true"}
# Waiting reasons that will not change by themselves: the pod is as far as it gets.
STUCK = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"})
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def digest_of(repository: str, tag: str) -> str:
    """The manifest digest of an image in the Docker Hub stand-in (what a digest-pinned pod names)."""
    request = urllib.request.Request(
        f"http://{UPSTREAM}/v2/{repository}/manifests/{tag}", method="HEAD", headers={"Accept": MANIFEST_TYPES}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return str(answer.headers["Docker-Content-Digest"])


def demo_pods() -> dict[str, dict[str, Any]]:
    pinned = f"hello@{digest_of('library/hello', '1')}"
    pods = {
        "official": node_pod("official", {"main": "hello:1"}),
        "organisation": node_pod("organisation", {"main": "someorg/hello:1"}),
        "digest-pinned": node_pod("digest-pinned", {"main": pinned}),
        "quay": node_pod("quay", {"main": "quay.io/prometheus/busybox:latest"}),
        "opted-out": node_pod("opted-out", {"main": "hello:1"}),
    }
    pods["opted-out"]["metadata"]["labels"] = dict(OPT_OUT)
    return pods


def settled(stored: dict[str, Any]) -> bool:
    status = stored.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    waiting = [(c.get("state") or {}).get("waiting") or {} for c in status.get("containerStatuses") or []]
    return any(w.get("reason") in STUCK for w in waiting)


def phase_of(stored: dict[str, Any]) -> str:
    status = stored.get("status") or {}
    waiting = [(c.get("state") or {}).get("waiting") or {} for c in status.get("containerStatuses") or []]
    reasons = [w["reason"] for w in waiting if w.get("reason")]
    return str(status.get("phase")) + (f" ({', '.join(reasons)})" if reasons else "")


def why(bed: NodeBed, namespace: str, stored: dict[str, Any], container: str) -> str:
    """The webhook's own reason, from its log line for this pod; a pod it never saw says why not."""
    lines = admissions(bed.webhook, namespace, stored["metadata"]["name"])
    if not lines:
        labels = stored["metadata"].get("labels") or {}
        if labels.get("ecr-pullthrough/skip") == "true":
            return "not sent to the webhook: the pod is labelled ecr-pullthrough/skip=true"
        return "not sent to the webhook"
    last = lines[-1]
    for entry in last.get("rewritten") or []:
        if entry["container"] == container:
            return "rewritten"
    for entry in last.get("unchanged") or []:
        if entry["container"] == container:
            return str(entry["reason"]) + (f" ({entry['detail']})" if entry.get("detail") else "")
    return str(last.get("skipped") or "?")


def pulled_from(bed: NodeBed, stored: dict[str, Any]) -> str:
    """Where containerd pulled the pod's image, from the ECR stand-in's request log."""
    image = stored["spec"]["containers"][0]["image"]
    if not image.startswith(f"{ECR_HOST}/"):
        return f"not the cache: {image.split('/')[0] if '.' in image.split('/')[0] else 'docker.io'} directly"
    repository = image.removeprefix(f"{ECR_HOST}/").rsplit(":", 1)[0]
    pulls = [r for r in bed.standin.requests if r.agent.startswith("containerd/") and f"/v2/{repository}/" in r.path]
    answered = [r for r in pulls if r.status == 200]
    if not answered:
        return f"the ECR stand-in refused it ({', '.join(str(r.status) for r in pulls) or 'no request'})"
    return f"the ECR stand-in, as {answered[-1].user} with fake-ECR token #{answered[-1].token}"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def redacted_secret(secret: dict[str, Any]) -> str:
    data = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    for entry in data.get("auths", {}).values():
        for key in ("password", "auth"):
            if key in entry:
                entry[key] = f"<redacted: {len(entry[key])} characters>"
    metadata = secret["metadata"]
    return "\n".join(
        [
            f"  type: {secret['type']}",
            f"  labels: {json.dumps(metadata.get('labels') or {}, sort_keys=True)}",
            f"  annotations: {json.dumps(metadata.get('annotations') or {}, sort_keys=True)}",
            f"  .dockerconfigjson: {json.dumps(data, sort_keys=True)}",
        ]
    )


def report(bed: NodeBed, namespace: str, names: list[str]) -> str:
    with bed.plane.api_client() as api:
        core = client.CoreV1Api(api)

        def settled_pod(name: str) -> dict[str, Any] | None:
            stored: dict[str, Any] = json.loads(core.read_namespaced_pod(name, namespace, _preload_content=False).data)
            return stored if settled(stored) else None

        pods = {
            name: wait_for(
                lambda name=name: settled_pod(name), timeout=SETTLE_TIMEOUT, interval=0.5, what=f"pod {name} to settle"
            )
            for name in names
        }
        secret = json.loads(core.read_namespaced_secret(PULL_SECRET, namespace, _preload_content=False).data)
        status = core.read_namespaced_config_map(STATUS_CONFIGMAP, RELEASE_NAMESPACE).data or {}
    rows = [["POD", "CONTAINER", "BEFORE", "AFTER", "WHY"]]
    for name, stored in pods.items():
        originals = json.loads(
            (stored["metadata"].get("annotations") or {}).get("ecr-pullthrough/original-images", "{}")
        )
        for container in stored["spec"]["containers"]:
            before = originals.get(container["name"], container["image"])
            after = container["image"] if container["image"] != before else "(unchanged)"
            rows.append([name, container["name"], before, after, why(bed, namespace, stored, container["name"])])
    document = StatusDocument.parse(status["status.json"])
    upstreams = [
        f"  {s.upstream}: {'verified' if s.verified else 'UNVERIFIED: ' + s.reason} "
        f"(registry {s.registry}, prefix {s.prefix}, checked {s.checked_at.isoformat(timespec='seconds')})"
        for s in document.upstreams
    ]
    phases = [["POD", "PHASE", "PULLED FROM"]] + [
        [name, phase_of(stored), pulled_from(bed, stored)] for name, stored in pods.items()
    ]
    return "\n".join(
        [
            f"Images in namespace {namespace}, before and after the webhook:",
            table(rows),
            "",
            f"The pull Secret {namespace}/{PULL_SECRET} the controller wrote (token redacted):",
            redacted_secret(secret),
            "",
            f"The upstream status the controller published ({RELEASE_NAMESPACE}/{STATUS_CONFIGMAP}):",
            *upstreams,
            "",
            "Each pod's phase on the node (a real kubelet and containerd; quay.io cannot be reached offline):",
            table(phases),
        ]
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="make demo-cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="exit after printing")
    args = parser.parse_args(argv)
    if not os.environ.get(INSIDE):
        print("run it through the bed: python -m tests.node.enter python -m tests.node.demo", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    folder = Path(tempfile.mkdtemp(prefix="ecr-pullthrough-demo-"))
    started = time.monotonic()
    try:
        print(
            "starting: etcd, kube-apiserver, the Docker Hub and ECR stand-ins, the fake ECR API, containerd,",
            flush=True,
        )
        print("          the controller, the webhook and a kubelet ...", flush=True)
        with node_bed(folder) as bed:
            wait_verified(bed)
            namespace = new_namespace(bed.plane, "demo")
            wait_for(lambda: _has_secret(bed, namespace), timeout=30, what="the controller's pull Secret")
            ready = time.monotonic() - started
            pods = demo_pods()
            with bed.plane.api_client() as api:
                for body in pods.values():
                    client.CoreV1Api(api).create_namespaced_pod(namespace, body)
            print(f"ready in {ready:.1f} s; pods created on node {NODE}\n", flush=True)
            print(report(bed, namespace, list(pods)), flush=True)
            print(f"\nall of it took {time.monotonic() - started:.1f} s", flush=True)
            if args.once:
                return 0
            here = os.getpid()
            print(
                "\nThe cluster runs in a private network namespace (the ECR host name resolves to 127.0.0.1 only "
                "there). From another shell, as root:\n"
                f"  nsenter --net=/proc/{here}/ns/net kubectl --kubeconfig {bed.plane.kubeconfig_path} "
                f"get pods -n {namespace}\n"
                "Ctrl-C stops everything.",
                flush=True,
            )
            while True:  # wakes each second, so a signal is handled in the main thread at once
                time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping everything ...", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: every process the bed started is stopped in order."""
    raise KeyboardInterrupt


def _has_secret(bed: NodeBed, namespace: str) -> bool:
    with bed.plane.api_client() as api:
        try:
            client.CoreV1Api(api).read_namespaced_secret(PULL_SECRET, namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
