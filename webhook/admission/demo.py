"""`ecr-pullthrough demo`: the real webhook process, a throwaway certificate, one sample pod.

It starts `ecr-pullthrough webhook` on 127.0.0.1 with a freshly generated CA
and serving certificate, sends it an AdmissionReview of a pod with several
kinds of images over verified TLS, applies the returned patch and prints each
image before and after, with the reason. Settings not given default to an
example registry, so it runs with no AWS account at all.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
from pydantic import ValidationError

from webhook import certs
from webhook.admission import review
from webhook.core.images import DOCKER_HUB
from webhook.core.upstream_status import StatusDocument, UpstreamStatus
from webhook.settings import RewriteCommandSettings

EXAMPLE_REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
VERIFIED_UPSTREAMS = {"docker.io": "docker-hub", "quay.io": "quay"}

SAMPLE_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "demo-", "namespace": "default", "labels": {"app": "demo"}},
    "spec": {
        "initContainers": [{"name": "init", "image": "busybox:1.36"}],
        "containers": [
            {"name": "web", "image": "nginx:1.27"},
            {"name": "cache", "image": "bitnami/redis:7.2"},
            {"name": "metrics", "image": "quay.io/prometheus/node-exporter:v1.8.2"},
            {"name": "app", "image": "ghcr.io/example/app:2.0"},
            {"name": "pinned", "image": "alpine@sha256:" + "a" * 64},
            {"name": "already", "image": f"{EXAMPLE_REGISTRY}/docker-hub/library/redis:7"},
        ],
    },
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(url: str, context: ssl.SSLContext, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the webhook exited with status {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, context=context, timeout=1):  # noqa: S310 (https to 127.0.0.1)
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the webhook did not answer {url} in time")


def run(args: list[str] | tuple[str, ...] | Any) -> int:
    settings_args = list(args)
    if not any(a.startswith(("--registry", "--account-id")) for a in settings_args) and not (
        os.environ.get("ECR_PULLTHROUGH_REGISTRY") or os.environ.get("ECR_PULLTHROUGH_ACCOUNT_ID")
    ):
        settings_args += ["--registry", EXAMPLE_REGISTRY, "--upstreams", "quay.io=quay"]
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="ecr-pullthrough-demo-") as folder:
        ca = certs.make_ca()
        serving = certs.make_leaf(ca, "ecr-pullthrough-demo", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
        cert, key = Path(folder, "tls.crt"), Path(folder, "tls.key")
        serving.write(cert, key)
        # What the controller publishes once it has verified the pull-through rules (no AWS here).
        status = Path(folder, "status.json")
        now = datetime.datetime.now(datetime.UTC)
        registry, upstreams = _verified_target(settings_args)
        verified = tuple(UpstreamStatus(host, prefix, True, "", now, registry) for host, prefix in upstreams.items())
        status.write_text(StatusDocument(now, verified).to_json())
        command = [sys.executable, "-m", "webhook", "webhook", "--tls-cert", str(cert), "--tls-key", str(key)]
        command += ["--upstream-status-file", str(status)]
        command += ["--port", str(port), *settings_args]
        print(f"upstreams verified (as the controller would publish them): {', '.join(upstreams)}")
        print(f"starting: ecr-pullthrough webhook --port {port} {' '.join(settings_args)}")
        log_path = Path(folder, "webhook.log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stderr=log)  # noqa: S603 (our own interpreter and module)
        try:
            context = ssl.create_default_context(cadata=ca.cert_pem.decode())
            base = f"https://127.0.0.1:{port}"
            _wait_ready(f"{base}/healthz", context, process, time.monotonic() + 30)
            pod_review = review.pod_review(SAMPLE_POD, namespace="default", uid=str(uuid.uuid4()))
            request = urllib.request.Request(  # noqa: S310 (https to 127.0.0.1)
                f"{base}/mutate", data=json.dumps(pod_review).encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, context=context, timeout=5) as answer:  # noqa: S310
                response = json.load(answer)["response"]
        finally:
            process.terminate()
            process.wait(timeout=10)
        reasons = _reasons(log_path.read_text(errors="replace"), response["uid"])
    patch = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
    after = jsonpatch.apply_patch(SAMPLE_POD, patch)
    print(f"\nAdmissionReview {response['uid']}: allowed={response['allowed']}, {len(patch)} patch operations\n")
    for field in ("initContainers", "containers"):
        for before, now in zip(SAMPLE_POD["spec"][field], after["spec"][field], strict=True):
            mark = "->" if before["image"] != now["image"] else "=="
            why = f"   ({reasons[before['name']]})" if before["name"] in reasons else ""
            print(f"  {before['name']:<8} {before['image']}\n           {mark} {now['image']}{why}")
    print(f"\nimagePullSecrets: {after['spec'].get('imagePullSecrets')}")
    for key, value in (after["metadata"].get("annotations") or {}).items():
        print(f"annotation {key}: {value}")
    print("\nThe same decision for any image: ecr-pullthrough rewrite --registry ... IMAGE...")
    return 0


def _verified_target(settings_args: list[str]) -> tuple[str, dict[str, str]]:
    """The registry and upstreams the demo's webhook is configured for: the status must name them to be trusted."""
    try:
        settings = RewriteCommandSettings(_cli_parse_args=settings_args)  # type: ignore[call-arg]
    except (ValidationError, SystemExit):  # the webhook process will say what is wrong
        return EXAMPLE_REGISTRY, VERIFIED_UPSTREAMS
    return settings.registry_host, {DOCKER_HUB: settings.prefix, **settings.upstreams}


def _reasons(log: str, uid: str) -> dict[str, str]:
    """Container name -> why its image was left alone, from the webhook's own log line for this review."""
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("event") == "admission" and entry.get("uid") == uid:
            return {
                item["container"]: item["reason"] + (f": {item['detail']}" if item.get("detail") else "")
                for item in entry.get("unchanged", [])
            }
    return {}
