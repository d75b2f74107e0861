"""Is the webhook answering the API server? A dry-run pod create that must come back rewritten.

What the stored pod should look like is the webhook's own decision (`mutate_pod` with the same
`PodPolicy` and the published upstream status), so an image the webhook would leave alone
(an unverified upstream) fails with the reason, not with a wrong expectation. Nothing is stored:
`dryRun=All` runs admission, webhooks included (they declare `sideEffects: None`), and stops there.
`doctor --check webhook` runs this; so does the chart's `helm test`.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from webhook.controller.kube import REQUEST_TIMEOUT, body
from webhook.core.mutate import AUDIT_ANNOTATION, ORIGINAL_IMAGES_ANNOTATION, PodPolicy, mutate_pod
from webhook.core.rewrite import Reason
from webhook.core.upstream_status import Verification
from webhook.ops.checklist import Result, failed, forbidden, passed, warned

CHECK = "webhook"
NAME = "webhook answers"
CONTAINER = "probe"
UNREACHED_FIX = (
    "the API server admitted the pod without the webhook (failurePolicy Ignore hides it): check that the "
    "webhook pods are ready, that its Service has endpoints, and that the API server can reach the pods' port "
    "(security groups, network policies)"
)


def probe_pod(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "ecr-pullthrough-doctor-",
            "labels": {"app.kubernetes.io/name": "ecr-pullthrough-doctor"},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": CONTAINER, "image": image}],
        },
    }


def check_webhook_answers(
    api: client.ApiClient,
    policy: PodPolicy,
    *,
    namespace: str,
    image: str,
    verified: Verification | None,
    opt_out_label: str,
) -> Result:
    pod = probe_pod(image)
    mutation = mutate_pod(pod, policy, namespace=namespace, verified=verified)
    if mutation.skipped:
        return failed(
            CHECK,
            NAME,
            f"the webhook leaves every pod in {namespace} alone ({mutation.skipped})",
            "pass --dry-run-namespace (helm test: the value helmTest.namespace) with a namespace the webhook serves",
        )
    [decision] = [item.decision for item in mutation.containers]
    if decision.reason is Reason.UPSTREAM_UNVERIFIED:
        return failed(
            CHECK,
            NAME,
            f"the webhook leaves {image} alone: {decision.detail}",
            "fix what the reason says; the controller verifies again within controller.verifySeconds "
            "(sooner while an upstream fails), and at once when it restarts",
        )
    if decision.reason is not Reason.REWRITTEN:
        return warned(
            CHECK,
            NAME,
            f"{image} cannot show a rewrite ({decision.reason}: {decision.detail or 'no detail'})",
            "pass --dry-run-image with a Docker Hub image the webhook rewrites",
        )
    core: Any = client.CoreV1Api(api)
    if _opted_out(core, namespace, opt_out_label):
        return failed(
            CHECK,
            NAME,
            f"the namespace {namespace} is labelled {opt_out_label}=true: the webhook is not called there",
            "pass --dry-run-namespace with a namespace the webhook serves",
        )
    try:
        stored = body(
            core.create_namespaced_pod(
                namespace, pod, dry_run="All", _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
    except ApiException as error:
        if error.status == 403:
            return forbidden(CHECK, NAME, "create pods", f"namespace {namespace}")
        return failed(
            CHECK,
            NAME,
            f"the dry-run pod was refused in {namespace}: {error.status} {_message(error)}",
            "read the refusal: a policy engine or a quota may refuse the pod before any webhook sees it",
        )
    except (HTTPError, OSError) as error:
        return failed(CHECK, NAME, f"the API server did not answer ({type(error).__name__})", "check the kubeconfig")
    return _judge(stored, image, decision.image, policy, namespace)


def _judge(stored: dict[str, Any], image: str, expected: str, policy: PodPolicy, namespace: str) -> Result:
    annotations = (stored.get("metadata") or {}).get("annotations") or {}
    [container] = [c for c in (stored.get("spec") or {}).get("containers") or [] if c.get("name") == CONTAINER]
    got = container.get("image")
    if policy.mode == "audit":
        would = _json(annotations.get(AUDIT_ANNOTATION)).get(CONTAINER)
        if got == image and would == expected:
            return passed(CHECK, NAME, f"a dry-run pod in {namespace} came back annotated (audit): {image} -> {would}")
        if got == image and would is None:
            return failed(
                CHECK, NAME, f"a dry-run pod in {namespace} came back without {AUDIT_ANNOTATION}", UNREACHED_FIX
            )
        return failed(
            CHECK,
            NAME,
            f"a dry-run pod in {namespace} came back with {got} and would-rewrite {would!r}, "
            f"not {image} and {expected} (audit mode)",
            "these settings differ from the webhook's: give doctor the release's settings (mode, registry, prefix)",
        )
    secrets = [s.get("name") for s in (stored.get("spec") or {}).get("imagePullSecrets") or []]
    if got == expected and policy.secret_name in secrets and ORIGINAL_IMAGES_ANNOTATION in annotations:
        return passed(CHECK, NAME, f"a dry-run pod in {namespace} came back rewritten: {image} -> {got}")
    if got == image:
        return failed(CHECK, NAME, f"a dry-run pod in {namespace} came back unchanged ({image})", UNREACHED_FIX)
    return failed(
        CHECK,
        NAME,
        f"a dry-run pod in {namespace} came back with {got} (pull secrets {secrets}), not {expected} "
        f"with {policy.secret_name}",
        "these settings differ from the webhook's: give doctor the release's settings (registry, prefix, secret name)",
    )


def _opted_out(core: Any, namespace: str, label: str) -> bool:
    """True when the namespace carries the opt-out label; unknown (no permission to read it) is False."""
    try:
        found = body(core.read_namespace(namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
    except (ApiException, HTTPError, OSError):
        return False
    return bool(((found.get("metadata") or {}).get("labels") or {}).get(label) == "true")


def _json(value: object) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if isinstance(value, str) else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)
