"""The `admission.k8s.io/v1` AdmissionReview wire format: typed request, small response builders.

Only the envelope is typed; the pod stays a dict, so fields this code does not
know pass through untouched. Pure: no I/O.

Decoding is most of a review's cost: kube-apiserver sends the whole pod (env, probes,
mounts, managedFields: 3-4 KB per container), and the decision reads a few hundred bytes
of it. So a review is decoded in one pass into the typed envelope plus a *view* of the
pod that holds only what `mutate_pod` reads (see `PodView`); msgspec skips every other
field without building it, about six times faster than decoding the whole body. A pod
whose shape the view does not fit (a field of the wrong JSON type on the way to an image)
is decoded again in full, so `mutate_pod` sees exactly what it would have seen and
decides it the same way; a test proves the two paths agree on every pod it generates.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
import orjson
from msgspec import UNSET, UnsetType

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

ObjectT = TypeVar("ObjectT")


class BadReviewError(ValueError):
    """The body is not an admission.k8s.io/v1 AdmissionReview; `uid` is echoed when it could be read."""

    def __init__(self, reason: str, uid: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.uid = uid


class GroupVersionKind(msgspec.Struct, frozen=True):
    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(msgspec.Struct, frozen=True):
    group: str = ""
    version: str = ""
    resource: str = ""


class UserInfo(msgspec.Struct, frozen=True):
    username: str = ""


class Request(msgspec.Struct, Generic[ObjectT], frozen=True, kw_only=True):
    """`request` of an AdmissionReview; `object` is the pod (or its view, while decoding)."""

    uid: Annotated[str, msgspec.Meta(min_length=1)]
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    kind: GroupVersionKind = GroupVersionKind()
    resource: GroupVersionResource = GroupVersionResource()
    sub_resource: str = msgspec.field(default="", name="subResource")
    name: str = ""
    namespace: str = ""
    user_info: UserInfo = msgspec.field(default=UserInfo(), name="userInfo")
    object: ObjectT | None = None
    old_object: ObjectT | None = msgspec.field(default=None, name="oldObject")
    dry_run: bool = msgspec.field(default=False, name="dryRun")

    @property
    def is_pod(self) -> bool:
        return self.kind.group == "" and self.kind.kind == "Pod" and self.resource.resource == "pods"


AdmissionRequest = Request[dict[str, Any]]


class Review(msgspec.Struct, Generic[ObjectT], frozen=True):
    api_version: Literal["admission.k8s.io/v1"] = msgspec.field(name="apiVersion")
    kind: Literal["AdmissionReview"]
    request: Request[ObjectT]


# The view of a pod: every member `mutate_pod` (and the handler's log line) reads, and no
# other. UNSET marks a member the pod does not have, which `to_builtins` leaves out, so the
# view converts to the same dict as the full pod restricted to these members. A member
# typed `Any` is kept whole, whatever its JSON type; a container list or container of
# another type fails the view, and the pod is decoded in full.
class ContainerView(msgspec.Struct, frozen=True):
    name: Any = UNSET
    image: Any = UNSET


Containers = list[ContainerView] | UnsetType | None


class SpecView(msgspec.Struct, frozen=True):
    init_containers: Containers = msgspec.field(default=UNSET, name="initContainers")
    containers: Containers = UNSET
    ephemeral_containers: Containers = msgspec.field(default=UNSET, name="ephemeralContainers")
    image_pull_secrets: Any = msgspec.field(default=UNSET, name="imagePullSecrets")


class MetadataView(msgspec.Struct, frozen=True):
    name: Any = UNSET
    generate_name: Any = msgspec.field(default=UNSET, name="generateName")
    annotations: Any = UNSET
    labels: Any = UNSET


class PodView(msgspec.Struct, frozen=True):
    metadata: MetadataView | UnsetType | None = UNSET
    spec: SpecView | UnsetType | None = UNSET


_VIEW = msgspec.json.Decoder(Review[PodView])
_FULL = msgspec.json.Decoder(Review[dict[str, Any]])


def parse_review(body: bytes) -> AdmissionRequest:
    """Decode and check one AdmissionReview; raise BadReviewError with a reason a human can act on.

    The returned request's `object` and `old_object` hold what `mutate_pod` reads of the pod
    (all of it, for a pod the view does not fit). Bytes in members the view skips are not
    validated: kube-apiserver (Go's encoding/json) never sends invalid ones.
    """
    try:
        view = _VIEW.decode(body).request
    except msgspec.ValidationError:
        return parse_in_full(body)
    except (msgspec.DecodeError, RecursionError) as error:
        raise BadReviewError(f"body is not JSON: {error}") from None
    # The same request with the views as dicts: `to_builtins` leaves out the members a pod lacks.
    return msgspec.structs.replace(
        view,  # type: ignore[arg-type]
        object=_as_dict(view.object),
        old_object=_as_dict(view.old_object),
    )


def _as_dict(view: PodView | None) -> dict[str, Any] | None:
    return None if view is None else msgspec.to_builtins(view)


def parse_in_full(body: bytes) -> AdmissionRequest:
    """Decode the whole body: the pods the view does not fit, and the reason a review is refused."""
    try:
        return _FULL.decode(body).request
    except msgspec.ValidationError as error:
        if not body.lstrip().startswith(b"{"):
            raise BadReviewError("body is not a JSON object") from None
        problem = str(error).replace("`$.", "`").replace(" - at `$`", "")
        raise BadReviewError(f"not an {API_VERSION} AdmissionReview: {problem}", uid=_uid(body)) from None
    except (msgspec.DecodeError, RecursionError) as error:
        raise BadReviewError(f"body is not JSON: {error}") from None


def _uid(body: bytes) -> str:
    """The request's uid of a body that is JSON but not a valid review, to echo in the answer."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    request = document.get("request") if isinstance(document, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    return uid if isinstance(uid, str) else ""


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
