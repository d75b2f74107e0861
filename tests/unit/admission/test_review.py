import base64
import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from tests.review_strategies import bodies
from tests.strategies import REGISTRY
from webhook.admission import review
from webhook.core.mutate import PodPolicy, mutate_pod
from webhook.core.rewrite import RewriteRules


def review_body(**request: object) -> bytes:
    body = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "object": {"metadata": {}},
    }
    body.update(request)
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}).encode()


def test_a_review_is_parsed() -> None:
    request = review.parse_review(review_body(subResource="ephemeralcontainers", operation="UPDATE", dryRun=True))
    assert (request.uid, request.sub_resource, request.operation, request.dry_run) == (
        "u-1",
        "ephemeralcontainers",
        "UPDATE",
        True,
    )
    assert request.is_pod


@pytest.mark.parametrize(
    ("body", "reason", "uid"),
    [
        (b"not json", "body is not JSON", ""),
        (b"\xff\xfe", "body is not JSON", ""),
        (b"[1, 2]", "body is not a JSON object", ""),
        (
            b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}',
            "apiVersion",
            "x",
        ),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request", ""),
        (review_body(uid=""), "request.uid", ""),
        (review_body(operation="PATCH"), "request.operation", "u-1"),
    ],
)
def test_bad_reviews_are_rejected_with_a_reason_and_the_uid(body: bytes, reason: str, uid: str) -> None:
    with pytest.raises(review.BadReviewError) as error:
        review.parse_review(body)
    assert reason in error.value.reason
    assert error.value.uid == uid


def test_allowed_has_no_patch() -> None:
    answer = review.patched("u", [])
    assert answer == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u", "allowed": True},
    }


def test_patched_carries_a_base64_json_patch() -> None:
    patch = [{"op": "add", "path": "/a", "value": 1}]
    response = review.patched("u", patch)["response"]
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == patch


# The view decoding (the envelope plus what `mutate_pod` reads) against decoding the whole body:
# every generated review, well-formed or not, must be refused with the same reason or decided the
# same way, down to the patch and the log line's pod name.
POLICY = PodPolicy(rules=RewriteRules(registry=REGISTRY))


@settings(max_examples=1000, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies())
def test_the_pod_view_decides_every_review_as_the_whole_pod_does(case: tuple[object, bytes]) -> None:
    _, body = case
    refusals: list[tuple[str, str]] = []
    for parse in (review.parse_review, review.parse_in_full):
        try:
            parse(body)
        except review.BadReviewError as error:
            refusals.append((error.reason, error.uid))
    if refusals:
        assert len(refusals) == 2, refusals
        assert refusals[0] == refusals[1]
        return
    viewed = review.parse_review(body)
    whole = review.parse_in_full(body)
    assert msgspec.structs.replace(viewed, object=None, old_object=None) == msgspec.structs.replace(
        whole, object=None, old_object=None
    )
    assert (viewed.object is None, viewed.old_object is None) == (whole.object is None, whole.old_object is None)
    if viewed.object is None:
        return
    for sub_resource in ("", "ephemeralcontainers"):
        assert mutate_pod(
            viewed.object, POLICY, namespace="default", sub_resource=sub_resource, old_pod=viewed.old_object
        ) == mutate_pod(whole.object, POLICY, namespace="default", sub_resource=sub_resource, old_pod=whole.old_object)
    metadata = (viewed.object.get("metadata"), whole.object.get("metadata"))
    if all(isinstance(m, dict) for m in metadata):
        assert [{k: m.get(k) for k in ("name", "generateName")} for m in metadata] == [
            {k: m.get(k) for k in ("name", "generateName")} for m in reversed(metadata)
        ]


def test_the_view_skips_what_the_decision_does_not_read() -> None:
    body = review_body(
        object={
            "metadata": {"name": "p", "managedFields": [{"manager": "m"}], "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "nginx", "env": [{"name": "X"}]}], "volumes": []},
        }
    )
    assert review.parse_review(body).object == {
        "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
