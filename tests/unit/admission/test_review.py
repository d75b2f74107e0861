import base64
import json

import pytest

from webhook.admission import review


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
