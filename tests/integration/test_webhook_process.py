"""The real webhook process over TLS on 127.0.0.1: reviews, bad bodies, limits, certificate rotation."""

import base64
import json
import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.strategies import REGISTRY
from tests.support import WebhookProcess, serving_pair, wait_for, webhook_process
from webhook import certs

REVIEW = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "3f1c",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "default",
        "operation": "CREATE",
        "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}},
    },
}


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    with webhook_process(tmp_path_factory.mktemp("webhook"), "--registry", REGISTRY, "--max-body-bytes", "65536") as w:
        yield w


@pytest.fixture
def client(webhook: WebhookProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=webhook.url, verify=webhook.ssl_context(), timeout=5) as client:
        yield client


def test_a_review_gets_a_patch_that_echoes_the_uid(client: httpx.Client) -> None:
    answer = client.post("/mutate", json=REVIEW)
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == ("3f1c", True, "JSONPatch")
    patch = json.loads(base64.b64decode(response["patch"]))
    assert patch[0] == {
        "op": "replace",
        "path": "/spec/containers/0/image",
        "value": f"{REGISTRY}/docker-hub/library/nginx:1.27",
    }


@pytest.mark.parametrize(
    ("content", "content_type", "status", "reason"),
    [
        (b"{not json", "application/json", 400, "body is not JSON"),
        (b'{"kind": "AdmissionReview"}', "application/json", 400, "not an admission.k8s.io/v1 AdmissionReview"),
        (json.dumps(REVIEW).encode(), "text/plain", 415, "content type must be application/json"),
        (b"{" + b" " * 70000 + b"}", "application/json", 413, "body larger than 65536 bytes"),
    ],
)
def test_bad_requests_get_a_clear_status_and_reason(
    client: httpx.Client, content: bytes, content_type: str, status: int, reason: str
) -> None:
    answer = client.post("/mutate", content=content, headers={"Content-Type": content_type})
    assert answer.status_code == status
    assert reason in answer.json()["error"]


def test_a_body_over_the_limit_without_content_length_is_refused(client: httpx.Client) -> None:
    chunks = iter([b"{", b" " * 40000, b" " * 40000, b"}"])
    answer = client.post("/mutate", content=chunks, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_health_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    client.post("/mutate", json=REVIEW)
    metrics = client.get("/metrics").text
    assert 'ecr_pullthrough_admissions_total{outcome="patched"}' in metrics
    assert 'ecr_pullthrough_image_decisions_total{mode="enforce",reason="rewritten"}' in metrics


def test_one_json_log_line_per_admission(webhook: WebhookProcess, client: httpx.Client) -> None:
    review = json.loads(json.dumps(REVIEW))
    review["request"]["uid"] = "log-check"
    client.post("/mutate", json=review)

    def logged() -> dict[str, object] | None:
        for line in webhook.log().splitlines():
            if line.startswith("{") and '"log-check"' in line:
                return json.loads(line)  # type: ignore[no-any-return]
        return None

    entry = wait_for(logged, what="the admission log line")
    assert entry["event"] == "admission"
    assert entry["outcome"] == "patched"
    assert entry["namespace"] == "default"


def _served_by(url_port: int, ca: certs.KeyPair) -> bool:
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    try:
        with (
            socket.create_connection(("127.0.0.1", url_port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except ssl.SSLCertVerificationError:
        return False


def test_a_rotated_certificate_is_served_without_restart(tmp_path: Path) -> None:
    with webhook_process(tmp_path, "--registry", REGISTRY) as webhook:
        port = int(webhook.url.rsplit(":", 1)[1])
        assert _served_by(port, webhook.ca)
        new_ca, _, _ = serving_pair(tmp_path)
        wait_for(lambda: _served_by(port, new_ca), what="the new certificate to be served")
        assert not _served_by(port, webhook.ca)
        assert webhook.process.poll() is None, "the webhook restarted"
        with httpx.Client(verify=ssl.create_default_context(cadata=new_ca.cert_pem.decode())) as client:
            assert client.post(f"{webhook.url}/mutate", json=REVIEW).status_code == 200


def test_sigterm_stops_the_process_gracefully(tmp_path: Path) -> None:
    with webhook_process(tmp_path, "--registry", REGISTRY) as webhook:
        # uvicorn finishes its shutdown, then re-raises the signal it caught.
        assert webhook.stop() in (0, -signal.SIGTERM)
        assert "Application shutdown complete." in webhook.log()
