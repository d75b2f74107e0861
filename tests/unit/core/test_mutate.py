import copy
import json
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import REGISTRY, pods
from webhook.core.mutate import (
    AUDIT_ANNOTATION,
    ORIGINAL_IMAGES_ANNOTATION,
    PodPolicy,
    escape_pointer,
    mutate_pod,
)
from webhook.core.rewrite import Reason, RewriteRules

POLICY = PodPolicy(rules=RewriteRules(registry=REGISTRY))
AUDIT = PodPolicy(rules=RewriteRules(registry=REGISTRY), mode="audit")
NODE_ROLE = PodPolicy(rules=RewriteRules(registry=REGISTRY), pull_secret_mode="node-role")


def pod(*images: str, **spec: Any) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return {"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": containers, **spec}}


def applied(original: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    return jsonpatch.apply_patch(original, patch)  # type: ignore[no-any-return]


def test_a_docker_hub_pod_gets_images_secret_and_annotation() -> None:
    original = pod("nginx:1.27", "ghcr.io/a/b:1")
    mutation = mutate_pod(original, POLICY, namespace="default")
    result = applied(original, mutation.patch)
    assert [c["image"] for c in result["spec"]["containers"]] == [
        f"{REGISTRY}/docker-hub/library/nginx:1.27",
        "ghcr.io/a/b:1",
    ]
    assert result["spec"]["imagePullSecrets"] == [{"name": "ecr-pullthrough"}]
    assert json.loads(result["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION]) == {"c0": "nginx:1.27"}
    assert [op["op"] for op in mutation.patch] == ["replace", "add", "add"]


def test_init_and_ephemeral_containers_are_rewritten_on_create() -> None:
    original = pod("nginx", initContainers=[{"name": "i", "image": "busybox"}])
    original["spec"]["ephemeralContainers"] = [{"name": "e", "image": "alpine"}]
    result = applied(original, mutate_pod(original, POLICY, namespace="default").patch)
    assert result["spec"]["initContainers"][0]["image"] == f"{REGISTRY}/docker-hub/library/busybox"
    assert result["spec"]["ephemeralContainers"][0]["image"] == f"{REGISTRY}/docker-hub/library/alpine"


def test_nothing_to_rewrite_means_no_patch() -> None:
    mutation = mutate_pod(pod("ghcr.io/a/b", f"{REGISTRY}/docker-hub/library/nginx"), POLICY, namespace="default")
    assert mutation.patch == []
    assert {c.decision.reason for c in mutation.containers} == {Reason.OTHER_REGISTRY, Reason.ALREADY_ECR}


def test_an_existing_secret_list_is_appended_to_and_ours_not_doubled() -> None:
    with_other = pod("nginx", imagePullSecrets=[{"name": "other"}])
    result = applied(with_other, mutate_pod(with_other, POLICY, namespace="default").patch)
    assert result["spec"]["imagePullSecrets"] == [{"name": "other"}, {"name": "ecr-pullthrough"}]
    with_ours = pod("nginx", imagePullSecrets=[{"name": "ecr-pullthrough"}])
    result = applied(with_ours, mutate_pod(with_ours, POLICY, namespace="default").patch)
    assert result["spec"]["imagePullSecrets"] == [{"name": "ecr-pullthrough"}]


def test_the_annotation_key_is_escaped_and_merged_on_reinvocation() -> None:
    first = pod("nginx")
    first["metadata"]["annotations"] = {"keep": "me"}
    once = applied(first, mutate_pod(first, POLICY, namespace="default").patch)
    assert any(
        op["path"] == "/metadata/annotations/ecr-pullthrough~1original-images"
        for op in mutate_pod(first, POLICY, namespace="default").patch
    )
    # another webhook adds a container; the API server calls us again
    once["spec"]["containers"].append({"name": "sidecar", "image": "envoyproxy/envoy:v1.31"})
    again = mutate_pod(once, POLICY, namespace="default")
    twice = applied(once, again.patch)
    assert json.loads(twice["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION]) == {
        "c0": "nginx",
        "sidecar": "envoyproxy/envoy:v1.31",
    }
    assert twice["spec"]["imagePullSecrets"] == [{"name": "ecr-pullthrough"}]
    assert twice["metadata"]["annotations"]["keep"] == "me"
    assert mutate_pod(twice, POLICY, namespace="default").patch == []


def test_opt_outs_and_mirror_pods_are_skipped() -> None:
    labelled = pod("nginx")
    labelled["metadata"]["labels"] = {"ecr-pullthrough/skip": "true"}
    mirror = pod("nginx")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    assert mutate_pod(labelled, POLICY, namespace="default").skipped == "pod-opted-out"
    assert mutate_pod(mirror, POLICY, namespace="default").skipped == "mirror-pod"
    assert mutate_pod(pod("nginx"), POLICY, namespace="kube-system").skipped == "namespace-excluded"
    for skipped in (labelled, mirror):
        assert mutate_pod(skipped, POLICY, namespace="default").patch == []


def test_audit_mode_changes_no_image_and_records_what_it_would_do() -> None:
    original = pod("nginx", "ghcr.io/a/b")
    mutation = mutate_pod(original, AUDIT, namespace="default")
    result = applied(original, mutation.patch)
    assert [c["image"] for c in result["spec"]["containers"]] == ["nginx", "ghcr.io/a/b"]
    assert "imagePullSecrets" not in result["spec"]
    assert json.loads(result["metadata"]["annotations"][AUDIT_ANNOTATION]) == {
        "c0": f"{REGISTRY}/docker-hub/library/nginx"
    }


def test_ephemeral_subresource_changes_only_new_ephemeral_images_when_the_secret_is_there() -> None:
    old = pod("nginx", imagePullSecrets=[{"name": "ecr-pullthrough"}])
    old["spec"]["ephemeralContainers"] = [{"name": "debug1", "image": "busybox"}]
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"].append({"name": "debug2", "image": "alpine"})
    mutation = mutate_pod(new, POLICY, namespace="default", sub_resource="ephemeralcontainers", old_pod=old)
    assert mutation.patch == [
        {"op": "replace", "path": "/spec/ephemeralContainers/1/image", "value": f"{REGISTRY}/docker-hub/library/alpine"}
    ]


def test_ephemeral_subresource_without_our_secret_leaves_the_image_with_a_reason() -> None:
    old = pod("nginx")
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox"}]
    mutation = mutate_pod(new, POLICY, namespace="default", sub_resource="ephemeralcontainers", old_pod=old)
    assert mutation.patch == []
    assert [c.decision.reason for c in mutation.containers] == [Reason.PULL_SECRET_MISSING]


def test_in_node_role_mode_images_are_rewritten_and_no_pull_secret_is_added() -> None:
    original = pod("nginx:1.27", "bitnami/redis:7.2", imagePullSecrets=[{"name": "other"}])
    mutation = mutate_pod(original, NODE_ROLE, namespace="default")
    result = applied(original, mutation.patch)
    assert [c["image"] for c in result["spec"]["containers"]] == [
        f"{REGISTRY}/docker-hub/library/nginx:1.27",
        f"{REGISTRY}/docker-hub/bitnami/redis:7.2",
    ]
    assert result["spec"]["imagePullSecrets"] == [{"name": "other"}]
    assert not any("imagePullSecrets" in op["path"] for op in mutation.patch)
    assert json.loads(result["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION]) == {
        "c0": "nginx:1.27",
        "c1": "bitnami/redis:7.2",
    }
    bare = pod("nginx")
    assert "imagePullSecrets" not in applied(bare, mutate_pod(bare, NODE_ROLE, namespace="x").patch)["spec"]


def test_in_node_role_mode_a_new_ephemeral_container_is_rewritten_without_our_secret() -> None:
    old = pod("nginx")
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox"}]
    mutation = mutate_pod(new, NODE_ROLE, namespace="default", sub_resource="ephemeralcontainers", old_pod=old)
    rewritten = f"{REGISTRY}/docker-hub/library/busybox"
    assert mutation.patch == [{"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": rewritten}]


def test_a_container_without_an_image_is_left_alone() -> None:
    original = {"metadata": {}, "spec": {"containers": [{"name": "x"}, {"name": "y", "image": 42}]}}
    mutation = mutate_pod(original, POLICY, namespace="default")
    assert mutation.patch == []
    assert {c.decision.reason for c in mutation.containers} == {Reason.INVALID_REFERENCE}


def test_escape_pointer() -> None:
    assert escape_pointer("a/b~c") == "a~1b~0c"


@settings(max_examples=300)
@given(pods(), st.sampled_from([POLICY, AUDIT, NODE_ROLE]))
def test_the_patch_applied_equals_the_mutated_copy_and_the_diff(original: dict[str, Any], policy: PodPolicy) -> None:
    before = copy.deepcopy(original)
    mutation = mutate_pod(original, policy, namespace="default")
    assert original == before, "mutate_pod must not change its input"
    expected = mutation.apply(original, policy)
    assert applied(original, mutation.patch) == expected
    # the same result as the whole-object diff the patch stands in for
    assert applied(original, jsonpatch.make_patch(original, expected).patch) == expected
    if not mutation.rewritten:
        assert mutation.patch == []


@given(pods(), st.sampled_from([POLICY, NODE_ROLE]))
def test_mutating_twice_equals_mutating_once(original: dict[str, Any], policy: PodPolicy) -> None:
    once = applied(original, mutate_pod(original, policy, namespace="default").patch)
    assert mutate_pod(once, policy, namespace="default").patch == []
