"""Hypothesis strategies of AdmissionReviews as the bad-input drill sends them.

Random pod shapes; missing, null and wrong-typed fields at every level of the review, the pod and
its containers; huge and Unicode strings; thousands of containers; duplicate container names;
arbitrary bytes.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.strategies import image_references
from webhook.core.mutate import AUDIT_ANNOTATION, MIRROR_POD_ANNOTATION, ORIGINAL_IMAGES_ANNOTATION

SECRET = "ecr-pullthrough"

scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8)
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
huge = st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=3), st.integers(2_000, 20_000))
strings = st.text(max_size=20) | st.sampled_from(["", "nginx", "ecr-pullthrough", "ÿ", "日本", "\x00", "a/b~c"]) | huge
images = image_references() | st.sampled_from(["nginx", "nginx:1.27", "bitnami/redis:7.2", "quay.io/x/y:1"]) | strings


def maybe(strategy: st.SearchStrategy[Any], weight: int = 3) -> st.SearchStrategy[Any]:
    """The value (`weight` times out of `weight` + 2), or null, or a value of some other JSON type."""
    # (st.one_of would fold repeated branches into one: weight by drawing the branch.)
    return st.sampled_from(range(weight + 2)).flatmap(
        lambda i: strategy if i < weight else st.none() if i == weight else junk  # type: ignore[return-value]
    )


def mostly(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return maybe(strategy, 40)


containers = st.fixed_dictionaries(
    {}, optional={"name": maybe(st.sampled_from(["a", "b", "c"]) | strings), "image": maybe(images, 8), "env": junk}
)

# As the API server sends them: what most pods hold, and what gets patched.
ordinary = st.fixed_dictionaries(
    {"name": st.sampled_from(["web", "sidecar", "init"]), "image": st.sampled_from(["nginx:1.27", "bitnami/redis:7.2"])}
)


@st.composite
def container_lists(draw: st.DrawFn) -> Any:
    listed = draw(st.lists(mostly(containers | ordinary), max_size=5))
    if listed and draw(st.sampled_from(range(40))) == 39:  # thousands, with duplicate names
        listed = listed * draw(st.integers(200, 600))
    return listed


annotations = st.dictionaries(
    st.sampled_from([ORIGINAL_IMAGES_ANNOTATION, AUDIT_ANNOTATION, MIRROR_POD_ANNOTATION, "x/y", "a~b"]) | strings,
    maybe(st.sampled_from(['{"a":"nginx"}', "[]", "{", "null"]) | strings),
    max_size=3,
)
metadata = st.fixed_dictionaries(
    {},
    optional={
        "name": maybe(strings),
        "generateName": maybe(strings),
        "labels": maybe(st.dictionaries(st.sampled_from(["ecr-pullthrough/skip", "app"]), maybe(strings), max_size=2)),
        "annotations": maybe(annotations),
    },
)
secrets = st.lists(maybe(st.fixed_dictionaries({"name": maybe(st.sampled_from([SECRET, "other"]))})), max_size=2)
spec = st.fixed_dictionaries(
    {},
    optional={
        "containers": mostly(container_lists()),
        "initContainers": maybe(container_lists()),
        "ephemeralContainers": maybe(container_lists()),
        "imagePullSecrets": maybe(secrets),
        "nodeName": strings,
    },
)
pods = st.fixed_dictionaries(
    {"spec": mostly(spec)}, optional={"apiVersion": st.just("v1"), "metadata": mostly(metadata)}
)
gvk = st.fixed_dictionaries(
    {"group": mostly(st.just("")), "version": st.just("v1"), "kind": mostly(st.sampled_from(["Pod"] * 9 + ["Job"]))}
)
gvr = st.fixed_dictionaries({"group": st.just(""), "version": st.just("v1"), "resource": mostly(st.just("pods"))})
requests = st.fixed_dictionaries(
    {
        "uid": mostly(st.text(min_size=1, max_size=40)),
        "object": mostly(pods),
        "kind": mostly(gvk),
        "resource": mostly(gvr),
        "operation": mostly(st.sampled_from(["CREATE"] * 6 + ["UPDATE", "DELETE", "CONNECT"])),
    },
    optional={
        "subResource": mostly(st.sampled_from(["", "", "", "ephemeralcontainers", "status"])),
        "namespace": mostly(st.sampled_from(["default"] * 5 + ["kube-system"]) | strings),
        "oldObject": maybe(pods),
        "dryRun": mostly(st.booleans()),
        "userInfo": mostly(st.fixed_dictionaries({"username": strings}, optional={"groups": junk})),
    },
)
reviews = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["admission.k8s.io/v1"] * 19 + ["admission.k8s.io/v1beta1"]),
        "kind": st.sampled_from(["AdmissionReview"] * 19 + ["Pod"]),
        "request": mostly(requests),
    }
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[dict[str, Any] | None, bytes]:
    """A review and its bytes (mostly), or bytes that are not one."""
    kind = draw(st.sampled_from(range(40)))
    if kind == 0:
        return None, draw(st.binary(max_size=2_000))
    pod = draw(pods)  # first, while hypothesis has its whole budget of choices
    review = draw(reviews)
    if isinstance(review["request"], dict) and draw(st.sampled_from(range(10))) != 9:
        review["request"]["object"] = pod
    body = json.dumps(review).encode()
    if kind == 1:
        return None, body[: draw(st.integers(0, max(0, len(body) - 1)))]
    return review, body
