import base64
import json
import logging
from typing import Any

import pytest

from tests.strategies import REGISTRY
from webhook.admission.handler import AdmissionHandler
from webhook.admission.metrics import WebhookMetrics
from webhook.core.mutate import PodPolicy
from webhook.core.rewrite import RewriteRules
from webhook.core.upstream_status import Verification


@pytest.fixture
def metrics() -> WebhookMetrics:
    return WebhookMetrics()


@pytest.fixture
def handler(metrics: WebhookMetrics) -> AdmissionHandler:
    return AdmissionHandler(PodPolicy(rules=RewriteRules(registry=REGISTRY)), metrics)


def body(obj: Any, *, kind: str = "Pod", resource: str = "pods", operation: str = "CREATE") -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "uid-7",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": resource},
                "namespace": "team",
                "operation": operation,
                "object": obj,
            },
        }
    ).encode()


def count(metrics: WebhookMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


POD = {"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


def test_a_pod_is_patched_and_logged_in_one_line(
    handler: AdmissionHandler, metrics: WebhookMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ecr_pullthrough")
    answer = handler.handle(body(POD))
    assert answer.status == 200
    response = answer.body["response"]
    assert response["uid"] == "uid-7"
    assert json.loads(base64.b64decode(response["patch"]))[0]["value"] == f"{REGISTRY}/docker-hub/library/nginx"
    assert count(metrics, "ecr_pullthrough_admissions_total", outcome="patched") == 1
    assert count(metrics, "ecr_pullthrough_image_decisions_total", reason="rewritten", mode="enforce") == 1
    [record] = [r for r in caplog.records if r.getMessage() == "admission"]
    fields = record.fields  # type: ignore[attr-defined]
    assert (fields["uid"], fields["namespace"], fields["pod"], fields["outcome"]) == (
        "uid-7",
        "team",
        "web-",
        "patched",
    )
    assert fields["rewritten"] == [{"container": "c", "from": "nginx", "to": f"{REGISTRY}/docker-hub/library/nginx"}]


@pytest.mark.parametrize(
    ("obj", "kind", "resource", "operation"),
    [
        ({"metadata": {}}, "Deployment", "deployments", "CREATE"),
        (POD, "Pod", "pods", "DELETE"),
        (POD, "Pod", "pods", "UPDATE"),
        (None, "Pod", "pods", "CREATE"),
    ],
)
def test_unexpected_objects_are_allowed_unchanged_and_counted(
    handler: AdmissionHandler, metrics: WebhookMetrics, obj: Any, kind: str, resource: str, operation: str
) -> None:
    answer = handler.handle(body(obj, kind=kind, resource=resource, operation=operation))
    assert answer.body["response"] == {"uid": "uid-7", "allowed": True}
    assert count(metrics, "ecr_pullthrough_admissions_total", outcome="ignored") == 1


def test_an_internal_error_allows_the_pod_unchanged(
    handler: AdmissionHandler, metrics: WebhookMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr("webhook.admission.handler.mutate_pod", broken)
    answer = handler.handle(body(POD))
    assert (answer.status, answer.body["response"]) == (200, {"uid": "uid-7", "allowed": True})
    assert count(metrics, "ecr_pullthrough_admissions_total", outcome="error") == 1


@pytest.mark.parametrize(
    ("pod", "problem"),
    [
        ({"metadata": [], "spec": {"containers": [{"name": "c", "image": "nginx"}]}}, "metadata is not an object"),
        ({"metadata": {"annotations": "x"}, "spec": {}}, "metadata.annotations is not an object"),
        ({"metadata": {}, "spec": {"containers": ["not-a-mapping"]}}, "spec.containers holds something"),
        ({"spec": {"containers": {"c": {"image": "nginx"}}}}, "spec.containers is not a list"),
        ({"spec": {"containers": [{"image": "nginx"}], "imagePullSecrets": {"name": "x"}}}, "imagePullSecrets"),
        ({"spec": "nginx"}, "spec is not an object"),
    ],
)
def test_a_pod_no_api_server_would_send_is_skipped_not_patched(
    handler: AdmissionHandler, metrics: WebhookMetrics, pod: dict[str, Any], problem: str
) -> None:
    answer = handler.handle(body(pod))
    assert (answer.status, answer.body["response"]) == (200, {"uid": "uid-7", "allowed": True})
    assert count(metrics, "ecr_pullthrough_admissions_total", outcome="skipped") == 1


@pytest.mark.parametrize("metadata", [None, {"annotations": None}, {"name": ["x"], "generateName": 7}])
def test_null_metadata_gets_a_patch_that_applies(handler: AdmissionHandler, metadata: Any) -> None:
    import jsonpatch

    pod = {"metadata": metadata, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    patch = json.loads(base64.b64decode(handler.handle(body(pod)).body["response"]["patch"]))
    patched = jsonpatch.apply_patch(pod, patch)
    assert patched["spec"]["containers"][0]["image"] == f"{REGISTRY}/docker-hub/library/nginx"


def test_a_malformed_body_is_a_400_with_a_reason(handler: AdmissionHandler, metrics: WebhookMetrics) -> None:
    answer = handler.handle(b"{")
    assert answer.status == 400
    assert "not JSON" in answer.body["error"]
    assert count(metrics, "ecr_pullthrough_admissions_total", outcome="bad_request") == 1


@pytest.mark.parametrize(("one_in", "rewritten"), [(0, False), (1, True)])
def test_a_degraded_upstream_is_rewritten_only_on_a_trial_pod(
    metrics: WebhookMetrics, caplog: pytest.LogCaptureFixture, one_in: int, rewritten: bool
) -> None:
    degraded = Verification(frozenset(), {"docker.io": "degraded: 5 of 6 pulls failed"}, trial={"docker.io": one_in})
    handler = AdmissionHandler(PodPolicy(rules=RewriteRules(registry=REGISTRY)), metrics, lambda: degraded)
    caplog.set_level(logging.INFO, "ecr_pullthrough")
    response = handler.handle(body(POD)).body["response"]
    assert ("patch" in response) is rewritten
    [record] = [r for r in caplog.records if r.getMessage() == "admission"]
    if not rewritten:
        [unchanged] = record.fields["unchanged"]  # type: ignore[attr-defined]
        assert unchanged["reason"] == "upstream-unverified"
        assert unchanged["detail"] == "degraded: 5 of 6 pulls failed"
