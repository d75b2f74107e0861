"""The `admission.k8s.io/v1` AdmissionReview wire format: typed request, small response builders.

Only the envelope is typed; the pod stays a dict, so fields this code does not
know pass through untouched. Pure: no I/O.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"


class BadReviewError(ValueError):
    """The body is not an admission.k8s.io/v1 AdmissionReview; `uid` is echoed when it could be read."""

    def __init__(self, reason: str, uid: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.uid = uid


class GroupVersionKind(BaseModel):
    model_config = ConfigDict(extra="ignore")
    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(BaseModel):
    model_config = ConfigDict(extra="ignore")
    group: str = ""
    version: str = ""
    resource: str = ""


class UserInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")
    username: str = ""


class AdmissionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    uid: str = Field(min_length=1)
    kind: GroupVersionKind = Field(default_factory=GroupVersionKind)
    resource: GroupVersionResource = Field(default_factory=GroupVersionResource)
    sub_resource: str = Field("", alias="subResource")
    name: str = ""
    namespace: str = ""
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    user_info: UserInfo = Field(default_factory=UserInfo, alias="userInfo")
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = Field(None, alias="oldObject")
    dry_run: bool = Field(False, alias="dryRun")

    @property
    def is_pod(self) -> bool:
        return self.kind.group == "" and self.kind.kind == "Pod" and self.resource.resource == "pods"


class AdmissionReview(BaseModel):
    model_config = ConfigDict(extra="ignore")

    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


def parse_review(body: bytes) -> AdmissionRequest:
    """Decode and check one AdmissionReview; raise BadReviewError with a reason a human can act on."""
    # orjson: about ten times faster than `json` on a 40 KB review. It refuses what kube-apiserver
    # (Go's encoding/json) never sends: invalid UTF-8, lone surrogates, nesting past 1,024 levels.
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadReviewError(f"body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadReviewError("body is not a JSON object")
    request = document.get("request")
    uid = request.get("uid", "") if isinstance(request, dict) else ""
    try:
        return AdmissionReview.model_validate(document).request
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
        )
        raise BadReviewError(
            f"not an {API_VERSION} AdmissionReview: {problems}", uid=uid if isinstance(uid, str) else ""
        ) from None


def pod_review(pod: dict[str, Any], *, namespace: str, uid: str, operation: str = "CREATE") -> dict[str, Any]:
    """An AdmissionReview request for `pod`, as the API server sends it (for the demo and the benchmarks)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "object": pod,
        },
    }


def review(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def allowed(uid: str, *, warnings: list[str] | None = None) -> dict[str, Any]:
    """Allow unchanged: no patch, no patchType."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if warnings:
        response["warnings"] = warnings
    return review(response)


def patched(uid: str, patch: list[dict[str, Any]], *, warnings: list[str] | None = None) -> dict[str, Any]:
    """Allow with a JSONPatch; a plain allow when the patch is empty."""
    if not patch:
        return allowed(uid, warnings=warnings)
    response = allowed(uid, warnings=warnings)["response"]
    response["patchType"] = "JSONPatch"
    response["patch"] = base64.b64encode(encode(patch)).decode()
    return review(response)


def encode(document: Any) -> bytes:
    """Compact JSON. orjson refuses a lone surrogate, which only a body orjson also refused could carry;
    `json` (ASCII-escaped) is the fallback, so encoding never fails on a string."""
    try:
        return orjson.dumps(document)
    except TypeError:
        return json.dumps(document, separators=(",", ":")).encode()
