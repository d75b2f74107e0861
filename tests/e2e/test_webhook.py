"""The webhook through a real kube-apiserver: pods as stored, and when the API server calls the webhook at all.

Every pod here goes through the API server with the Kubernetes client; the
assertions are on the stored objects (no controller-manager or kubelet runs,
so pods are never scheduled) and on the webhook's own log of each admission.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from tests.e2e.controlplane import ControlPlane
from tests.e2e.fixtures_webhook import (
    TARGET_LABEL,
    RegisteredWebhook,
    annotations,
    auditing,
    create_pod,
    enforcing,
    images,
    new_namespace,
    pod,
    pull_secrets,
    read_pod,
    registered,
    registered_webhook,
    restricted_to,
    sidecar_injector,
    silent_listener,
    unique,
    wait_until_admitted,
)
from tests.e2e.webhookconfig import OPT_OUT_LABEL, mutating_webhook_configuration
from tests.strategies import REGISTRY, image_references
from webhook.core.mutate import AUDIT_ANNOTATION, ORIGINAL_IMAGES_ANNOTATION, PodPolicy, mutate_pod
from webhook.core.rewrite import RewriteRules

__all__ = ["auditing", "enforcing"]  # fixtures, used by name

log = logging.getLogger(__name__)

SECRET = "ecr-pullthrough"
SIDECAR_LABEL = "e2e.ecr-pullthrough.io/sidecars"
DIGEST = "sha256:" + "a" * 64
# What the webhook process runs with: `--registry REGISTRY` and the defaults, with upstreams not required to be
# verified (tests.support.webhook_process adds `--require-verified-upstreams=false`), so mutate_pod(verified=None).
POLICY = PodPolicy(rules=RewriteRules(registry=REGISTRY))
# Fail-open tests: the API server waits timeoutSeconds; the margin covers a slow CI runner, not a retry.
FAIL_OPEN_TIMEOUT = 2
FAIL_OPEN_MARGIN = 8.0


def ecr(path: str) -> str:
    return f"{REGISTRY}/docker-hub/{path}"


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with control_plane.api_client() as api:
        yield api


# -- rewriting at creation ---------------------------------------------------------------


def test_docker_hub_images_are_rewritten_and_every_other_image_is_left_alone(
    enforcing: RegisteredWebhook, api: client.ApiClient
) -> None:
    namespace = enforcing.namespace("rewrite")
    manifest = pod(
        "mixed",
        {
            "web": "nginx:1.27",
            "cache": "bitnami/redis:7.2",
            "explicit": "docker.io/library/busybox:1.36",
            "github": "ghcr.io/org/app:1",
            "k8s": "registry.k8s.io/pause:3.10",
            "cached": ecr("library/nginx:1"),
            "pinned": f"nginx@{DIGEST}",
            "invalid": "Nginx:Bad",
        },
        {"setup": "alpine:3.20", "init-github": "ghcr.io/org/init:2"},
    )

    created = create_pod(api, namespace, manifest)

    stored = read_pod(api, namespace, "mixed")
    assert images(stored) == images(created)
    assert images(stored) == {
        "web": ecr("library/nginx:1.27"),
        "cache": ecr("bitnami/redis:7.2"),
        "explicit": ecr("library/busybox:1.36"),
        "github": "ghcr.io/org/app:1",
        "k8s": "registry.k8s.io/pause:3.10",
        "cached": ecr("library/nginx:1"),
        "pinned": f"nginx@{DIGEST}",
        "invalid": "Nginx:Bad",
    }
    assert images(stored, "initContainers") == {
        "setup": ecr("library/alpine:3.20"),
        "init-github": "ghcr.io/org/init:2",
    }
    assert pull_secrets(stored) == [{"name": SECRET}]
    assert json.loads(annotations(stored)[ORIGINAL_IMAGES_ANNOTATION]) == {
        "web": "nginx:1.27",
        "cache": "bitnami/redis:7.2",
        "explicit": "docker.io/library/busybox:1.36",
        "setup": "alpine:3.20",
    }
    [admission] = enforcing.admissions(namespace, "mixed")
    reasons = {item["container"]: item["reason"] for item in admission["unchanged"]}
    assert reasons == {
        "github": "other-registry",
        "k8s": "other-registry",
        "init-github": "other-registry",
        "cached": "already-ecr",
        "pinned": "digest-pinned",
        "invalid": "invalid-reference",
    }


def test_a_pull_secret_already_listed_is_not_added_again_and_others_are_kept(
    enforcing: RegisteredWebhook, api: client.ApiClient
) -> None:
    namespace = enforcing.namespace("secrets")
    for name, listed in [("ours", [{"name": SECRET}]), ("theirs", [{"name": "corp-registry"}])]:
        stored = create_pod(api, namespace, pod(name, {"web": "nginx:1.27"}, imagePullSecrets=listed))
        assert images(stored) == {"web": ecr("library/nginx:1.27")}
        assert pull_secrets(stored) == [*[s for s in listed if s["name"] != SECRET], {"name": SECRET}]


def test_a_pod_with_fifty_docker_hub_containers_is_rewritten_entirely(
    enforcing: RegisteredWebhook, api: client.ApiClient
) -> None:
    namespace = enforcing.namespace("fifty")
    originals = {f"c{index:02d}": f"team{index % 7}/service-{index}:1.{index}" for index in range(50)}

    stored = create_pod(api, namespace, pod("fifty", originals))

    assert images(stored) == {name: ecr(image) for name, image in originals.items()}
    assert pull_secrets(stored) == [{"name": SECRET}]
    assert json.loads(annotations(stored)[ORIGINAL_IMAGES_ANNOTATION]) == originals


def test_a_pod_without_docker_hub_images_is_not_changed_at_all(
    enforcing: RegisteredWebhook, api: client.ApiClient
) -> None:
    namespace = enforcing.namespace("foreign")
    originals = {"app": "ghcr.io/org/app:1", "pause": "registry.k8s.io/pause:3.10", "mine": ecr("library/nginx:1")}

    stored = create_pod(api, namespace, pod("foreign", originals))

    assert images(stored) == originals
    assert "imagePullSecrets" not in stored["spec"]
    assert "annotations" not in stored["metadata"]
    # Called, and answered with a plain allow: no patch at all.
    assert [a["outcome"] for a in enforcing.admissions(namespace, "foreign")] == ["unchanged"]


# -- ephemeral containers (`kubectl debug`) ------------------------------------------------


def add_debugger(api: client.ApiClient, namespace: str, name: str, image: str) -> dict[str, Any]:
    """What `kubectl debug` does: add an ephemeral container through the subresource."""
    patch = {"spec": {"ephemeralContainers": [{"name": "debugger", "image": image, "stdin": True, "tty": True}]}}
    client.CoreV1Api(api).patch_namespaced_pod_ephemeralcontainers(name, namespace, patch)
    return read_pod(api, namespace, name)


def test_an_ephemeral_container_is_rewritten_when_the_pod_has_the_pull_secret(
    enforcing: RegisteredWebhook, api: client.ApiClient
) -> None:
    namespace = enforcing.namespace("debug")
    created = create_pod(api, namespace, pod("debugged", {"web": "nginx:1.27"}))
    assert pull_secrets(created) == [{"name": SECRET}]

    stored = add_debugger(api, namespace, "debugged", "busybox:1.36")

    assert images(stored, "ephemeralContainers") == {"debugger": ecr("library/busybox:1.36")}
    assert images(stored) == {"web": ecr("library/nginx:1.27")}
    # Metadata cannot change through the subresource: the annotation is the one written at creation.
    assert annotations(stored) == annotations(created)
    update = enforcing.admissions(namespace, "debugged")[-1]
    assert (update["subResource"], update["outcome"]) == ("ephemeralcontainers", "patched")


def test_an_ephemeral_container_is_left_alone_when_the_pod_lacks_the_pull_secret(
    enforcing: RegisteredWebhook, api: client.ApiClient
) -> None:
    namespace = enforcing.namespace("debug")
    created = create_pod(api, namespace, pod("debugged", {"app": "ghcr.io/org/app:1"}))
    assert pull_secrets(created) == []

    stored = add_debugger(api, namespace, "debugged", "busybox:1.36")

    # Rewritten, it would fail to pull: a pod's pull secrets cannot be added after creation.
    assert images(stored, "ephemeralContainers") == {"debugger": "busybox:1.36"}
    update = enforcing.admissions(namespace, "debugged")[-1]
    assert update["subResource"] == "ephemeralcontainers"
    assert [(u["container"], u["reason"]) for u in update["unchanged"]] == [("debugger", "pull-secret-missing")]


# -- opt-outs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "rewritten"), [("true", False), ("false", True)])
def test_a_pod_labelled_skip_true_is_not_sent_to_the_webhook(
    enforcing: RegisteredWebhook, api: client.ApiClient, value: str, rewritten: bool
) -> None:
    namespace = enforcing.namespace("optout")

    stored = create_pod(api, namespace, pod("labelled", {"web": "nginx:1.27"}, labels={OPT_OUT_LABEL: value}))

    assert (images(stored)["web"] != "nginx:1.27") is rewritten
    assert (ORIGINAL_IMAGES_ANNOTATION in annotations(stored)) is rewritten
    # The configuration's objectSelector keeps an opted-out pod from the webhook altogether.
    assert bool(enforcing.admissions(namespace, "labelled")) is rewritten


def test_a_namespace_labelled_skip_true_is_not_sent_to_the_webhook(
    enforcing: RegisteredWebhook, api: client.ApiClient
) -> None:
    namespace = enforcing.namespace("optout-ns", {OPT_OUT_LABEL: "true"})

    stored = create_pod(api, namespace, pod("inside", {"web": "nginx:1.27"}))

    assert images(stored) == {"web": "nginx:1.27"}
    assert pull_secrets(stored) == []
    assert enforcing.admissions(namespace, "inside") == []


def test_the_release_namespace_is_not_sent_to_the_webhook(
    enforcing: RegisteredWebhook, control_plane: ControlPlane, api: client.ApiClient
) -> None:
    # The chart's own namespace: the webhook's pods must start even while the webhook is down.
    namespace = enforcing.release_namespace
    control_plane.create_namespace(namespace, labels={TARGET_LABEL: enforcing.target})

    stored = create_pod(api, namespace, pod("own", {"web": "nginx:1.27"}))

    assert images(stored) == {"web": "nginx:1.27"}
    assert enforcing.admissions(namespace, "own") == []


def test_a_mirror_pod_is_left_alone(enforcing: RegisteredWebhook, api: client.ApiClient) -> None:
    namespace = enforcing.namespace("mirror")
    # A kubelet creates these; the API server only insists that a mirror pod names its node.
    manifest = pod(
        "static-web",
        {"web": "nginx:1.27"},
        annotations={"kubernetes.io/config.mirror": "0f1e2d3c"},
        nodeName="node-1",
    )

    stored = create_pod(api, namespace, manifest)

    assert images(stored) == {"web": "nginx:1.27"}
    assert pull_secrets(stored) == []
    assert annotations(stored) == {"kubernetes.io/config.mirror": "0f1e2d3c"}
    [admission] = enforcing.admissions(namespace, "static-web")
    assert (admission["outcome"], admission["skipped"]) == ("skipped", "mirror-pod")


# -- audit mode -------------------------------------------------------------------------------


def test_audit_mode_records_what_it_would_rewrite_and_changes_nothing(
    auditing: RegisteredWebhook, api: client.ApiClient
) -> None:
    # Only the audit configuration acts here: the namespace carries its label value, not the enforcing one's.
    namespace = auditing.namespace("audit")

    stored = create_pod(api, namespace, pod("audited", {"web": "nginx:1.27", "app": "ghcr.io/org/app:1"}))

    assert images(stored) == {"web": "nginx:1.27", "app": "ghcr.io/org/app:1"}
    assert pull_secrets(stored) == []
    assert ORIGINAL_IMAGES_ANNOTATION not in annotations(stored)
    assert json.loads(annotations(stored)[AUDIT_ANNOTATION]) == {"web": ecr("library/nginx:1.27")}


# -- another mutating webhook after ours --------------------------------------------------------


def test_containers_added_by_a_later_webhook_are_rewritten_on_reinvocation(
    enforcing: RegisteredWebhook, control_plane: ControlPlane, api: client.ApiClient, tmp_path: Path
) -> None:
    injected = unique("injected")
    with sidecar_injector(tmp_path, {"name": "envoy", "image": "envoyproxy/envoy:v1.31"}) as injector:
        # The API server calls mutating webhooks in the order of their configurations' names: ours first.
        configuration = injector.configuration(unique("zz-sidecar-injector"))
        with registered(control_plane, restricted_to(configuration, SIDECAR_LABEL, injected)):
            namespace = enforcing.namespace("reinvoke", {SIDECAR_LABEL: injected})
            wait_until_admitted(
                control_plane, namespace, lambda probe: "envoy" in images(probe), what="the sidecar injector to act"
            )
            stored = create_pod(api, namespace, pod("meshed", {"web": "nginx:1.27"}))

    assert images(stored) == {"web": ecr("library/nginx:1.27"), "envoy": ecr("envoyproxy/envoy:v1.31")}
    assert pull_secrets(stored) == [{"name": SECRET}]
    assert json.loads(annotations(stored)[ORIGINAL_IMAGES_ANNOTATION]) == {
        "web": "nginx:1.27",
        "envoy": "envoyproxy/envoy:v1.31",
    }
    # Ours first, before the sidecar existed; then again because the injector changed the pod.
    first, second = enforcing.admissions(namespace, "meshed")
    assert [r["container"] for r in first["rewritten"]] == ["web"]
    assert [r["container"] for r in second["rewritten"]] == ["envoy"]


# -- failing open -----------------------------------------------------------------------------------


def timed_create(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    stored = create_pod(api, namespace, manifest)
    return stored, time.monotonic() - started


def test_a_stopped_webhook_does_not_block_pods(
    control_plane: ControlPlane, api: client.ApiClient, tmp_path: Path
) -> None:
    target = unique("refused")
    with registered_webhook(control_plane, tmp_path, target=target, timeout_seconds=FAIL_OPEN_TIMEOUT) as webhook:
        namespace = webhook.namespace("refused")
        assert images(create_pod(api, namespace, pod("before", {"web": "nginx:1.27"}))) == {
            "web": ecr("library/nginx:1.27")
        }
        webhook.process.stop()  # its port now refuses connections

        stored, elapsed = timed_create(api, namespace, pod("after", {"web": "nginx:1.27"}))

    log.info("pod created in %.2fs while the webhook was stopped", elapsed)
    assert images(stored) == {"web": "nginx:1.27"}
    assert pull_secrets(stored) == []
    assert elapsed < FAIL_OPEN_TIMEOUT + FAIL_OPEN_MARGIN, f"pod creation took {elapsed:.2f}s"


def test_a_hung_webhook_delays_a_pod_by_its_timeout_and_no_more(
    control_plane: ControlPlane, api: client.ApiClient
) -> None:
    target = unique("hung")
    with silent_listener() as listener:
        configuration = mutating_webhook_configuration(
            url=listener.url,
            ca_pem=listener.ca_pem,
            name=unique("ecr-pullthrough-hung"),
            timeout_seconds=FAIL_OPEN_TIMEOUT,
        )
        with registered(control_plane, restricted_to(configuration, TARGET_LABEL, target)):
            namespace = new_namespace(control_plane, "hung", {TARGET_LABEL: target})
            wait_until_admitted(
                control_plane, namespace, lambda _: bool(listener.accepted), what="the API server to call the listener"
            )
            called_before = len(listener.accepted)

            stored, elapsed = timed_create(api, namespace, pod("patient", {"web": "nginx:1.27"}))

            called = len(listener.accepted) - called_before

    log.info("pod created in %.2fs while the webhook hung", elapsed)
    assert images(stored) == {"web": "nginx:1.27"}
    assert pull_secrets(stored) == []
    assert called >= 1
    # The API server did wait for the webhook, and gave up after timeoutSeconds.
    assert FAIL_OPEN_TIMEOUT * 0.9 <= elapsed < FAIL_OPEN_TIMEOUT + FAIL_OPEN_MARGIN, f"creation took {elapsed:.2f}s"


# -- the stored pod is what the pure functions predict ---------------------------------------------------

# The API server checks no image syntax (it rejects only an empty image or surrounding whitespace): these reach us.
INVALID_IMAGES = (
    "Nginx:Bad",
    "nginx:",
    "a b",
    "☃",
    "UPPER/case:1",
    "-lead",
    "nginx@sha256:abc",
    "::",
    "ghcr.io/Org/app",
    "0" * 64,
)
# A container name is a DNS-1123 label (tests.strategies.container_names also allows a trailing `-`).
creatable_container_names = st.from_regex(r"\A[a-z](?:[a-z0-9-]{0,9}[a-z0-9])?\Z")


@st.composite
def creatable_pods(draw: st.DrawFn, *, max_containers: int = 6) -> dict[str, Any]:
    """Like tests.strategies.pods(), but pods the API server accepts at creation: no ephemeral containers."""
    names = draw(st.lists(creatable_container_names, min_size=1, max_size=max_containers, unique=True))
    spec: dict[str, Any] = {"containers": [], "initContainers": []}
    for index, name in enumerate(names):
        field = "containers" if index == 0 else draw(st.sampled_from(["containers", "initContainers"]))
        spec[field].append({"name": name, "image": draw(image_references() | st.sampled_from(INVALID_IMAGES))})
    secrets = draw(st.sampled_from([None, [], [{"name": "other"}], [{"name": SECRET}]]))
    if secrets is not None:
        spec["imagePullSecrets"] = secrets
    metadata: dict[str, Any] = {}
    labels = draw(st.sampled_from([None, {"app": "web"}, {OPT_OUT_LABEL: "true"}, {OPT_OUT_LABEL: "false"}]))
    if labels is not None:
        metadata["labels"] = labels
    recorded = draw(
        st.sampled_from(
            [None, {}, {"a/b": "c"}, {ORIGINAL_IMAGES_ANNOTATION: '{"old":"nginx"}'}, {ORIGINAL_IMAGES_ANNOTATION: "?"}]
        )
    )
    if recorded is not None:
        metadata["annotations"] = recorded
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def rewrite_relevant(stored: dict[str, Any]) -> dict[str, Any]:
    """The fields the webhook may change; the API server defaults many others."""
    return {
        "containers": images(stored),
        "initContainers": images(stored, "initContainers"),
        "imagePullSecrets": pull_secrets(stored),
        "annotations": annotations(stored),
    }


RANDOM_PODS = 300


def test_every_stored_pod_is_what_the_pure_functions_predict(
    enforcing: RegisteredWebhook, api: client.ApiClient
) -> None:
    namespace = enforcing.namespace("random")
    names = (f"random-{index}" for index in itertools.count())
    created: list[str] = []

    @settings(
        max_examples=RANDOM_PODS,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(creatable_pods())
    def check(manifest: dict[str, Any]) -> None:
        manifest["metadata"]["name"] = name = next(names)
        predicted = mutate_pod(manifest, POLICY, namespace=namespace).apply(manifest, POLICY)

        stored = create_pod(api, namespace, manifest)

        created.append(name)
        assert rewrite_relevant(stored) == rewrite_relevant(predicted), manifest

    check()
    assert len(created) >= RANDOM_PODS
