"""The chart's ValidatingAdmissionPolicy, on the real API server, as the controller's ServiceAccount.

RBAC cannot limit `create` by name, so without the policy the controller's
identity could create a `kubernetes.io/service-account-token` Secret for any
ServiceAccount and read the minted token back. Each write below that the
controller never needs is refused by the policy (not by RBAC: the message
names the policy); each write it does need still works, and the real
controller does its whole job under the policy.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.chart import REGISTRY, apply, render
from tests.e2e.controllers import controller_process, token_kubeconfig
from tests.e2e.controlplane import ControlPlane
from tests.fake_ecr import fake_ecr
from tests.support import wait_for

RELEASE = NAMESPACE = "policy-e2e"
FULLNAME = f"{RELEASE}-ecr-pullthrough"
CONTROLLER = f"{FULLNAME}-controller"  # the ServiceAccount, the Lease, the policy and its binding
WEBHOOK = f"{FULLNAME}-webhook"
TLS_SECRET = f"{WEBHOOK}-tls"
# A name of this module's own: Secrets of this release left in the shared API server must never look, to
# the other modules' controllers, like another release's Secret of their name.
PULL_SECRET = "policy-e2e-pull"
MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "ecr-pullthrough/instance"
INSTANCE = f"{NAMESPACE}.{RELEASE}"  # the chart's name for this installation
OURS = {MANAGED_BY: "ecr-pullthrough", INSTANCE_LABEL: INSTANCE}
DOCKERCONFIG = base64.b64encode(b'{"auths":{}}').decode()
DENIED_BY_POLICY = f"ValidatingAdmissionPolicy '{CONTROLLER}' with binding '{CONTROLLER}' denied request"


@dataclass
class Setup:
    admin: client.ApiClient
    controller: client.ApiClient
    kubeconfig: Path
    workloads: str


def secret(
    name: str, kind: str = "kubernetes.io/dockerconfigjson", annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    data = {".dockerconfigjson": DOCKERCONFIG} if kind == "kubernetes.io/dockerconfigjson" else {}
    if kind == "kubernetes.io/tls":
        data = {"tls.crt": "", "tls.key": ""}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "annotations": annotations or {}, "labels": dict(OURS)},
        "type": kind,
        "data": data,
    }


def refused_by_policy(write: Callable[[], object]) -> str:
    with pytest.raises(ApiException) as refused:
        write()
    assert refused.value.status == 403, refused.value.body
    assert DENIED_BY_POLICY in str(refused.value.body), refused.value.body
    return str(refused.value.body)


def policy_enforced(core: Any, namespace: str) -> bool:
    """A policy is enforced some time after its creation: probe with a write it refuses (dry run)."""
    try:
        core.create_namespaced_secret(namespace, secret(PULL_SECRET, "Opaque"), dry_run="All")
    except ApiException as error:
        return error.status == 403 and DENIED_BY_POLICY in str(error.body)
    return False


@pytest.fixture(scope="module")
def setup(control_plane: ControlPlane, helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    control_plane.create_namespace(NAMESPACE)
    workloads = f"policy-workloads-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(workloads)
    objects = render(
        helm,
        release=RELEASE,
        namespace=NAMESPACE,
        set_values={"secretName": PULL_SECRET},
        show_only=(
            "templates/controller-rbac.yaml",
            "templates/controller-policy.yaml",
            "templates/mutatingwebhookconfiguration.yaml",
        ),
    )
    for obj in objects:
        if obj["kind"] == "MutatingWebhookConfiguration":
            # The chart's configuration, made to match no pod of the other tests.
            for hook in obj["webhooks"]:
                hook["objectSelector"] = {"matchLabels": {"policy-e2e/never": "true"}}
    with control_plane.api_client() as admin:
        apply(admin, objects, NAMESPACE)
        token = control_plane.service_account_token(NAMESPACE, CONTROLLER)
        kubeconfig = token_kubeconfig(control_plane, token, tmp_path_factory.mktemp("policy") / "kubeconfig")
        with control_plane.api_client(token) as controller:
            core = client.CoreV1Api(controller)
            wait_for(lambda: policy_enforced(core, workloads), timeout=30, what="the policy to be enforced")
            yield Setup(admin, controller, kubeconfig, workloads)
        admission = client.AdmissionregistrationV1Api(admin)
        admission.delete_mutating_webhook_configuration(FULLNAME)
        admission.delete_validating_admission_policy_binding(CONTROLLER)
        admission.delete_validating_admission_policy(CONTROLLER)


def test_the_controller_cannot_mint_a_service_account_token(setup: Setup) -> None:
    core = client.CoreV1Api(setup.controller)
    token_secret = secret(
        PULL_SECRET, "kubernetes.io/service-account-token", {"kubernetes.io/service-account.name": "default"}
    )
    token_secret["data"] = {}
    refused_by_policy(lambda: core.create_namespaced_secret("kube-system", token_secret))
    refused_by_policy(lambda: core.create_namespaced_secret(setup.workloads, token_secret))
    annotated = secret(PULL_SECRET, annotations={"kubernetes.io/service-account.name": "default"})
    refused_by_policy(lambda: core.create_namespaced_secret(setup.workloads, annotated))
    # Nor with the TLS Secret's name, where the controller may write.
    tls_token = secret(
        TLS_SECRET, "kubernetes.io/service-account-token", {"kubernetes.io/service-account.name": "default"}
    )
    tls_token["data"] = {}
    refused_by_policy(lambda: core.create_namespaced_secret(NAMESPACE, tls_token))


@pytest.mark.parametrize(
    ("name", "kind", "where"),
    [
        (PULL_SECRET, "Opaque", "workloads"),
        ("another-name", "kubernetes.io/dockerconfigjson", "workloads"),
        ("another-name", "Opaque", "release"),
        (TLS_SECRET, "kubernetes.io/tls", "workloads"),
        (TLS_SECRET, "Opaque", "release"),
    ],
)
def test_the_controller_creates_no_other_secret(setup: Setup, name: str, kind: str, where: str) -> None:
    namespace = NAMESPACE if where == "release" else setup.workloads
    core = client.CoreV1Api(setup.controller)
    refused_by_policy(lambda: core.create_namespaced_secret(namespace, secret(name, kind)))


def test_the_secrets_the_controller_needs_can_still_be_written(setup: Setup) -> None:
    core = client.CoreV1Api(setup.controller)
    namespace = f"policy-legit-{uuid.uuid4().hex[:6]}"
    with client.ApiClient(setup.admin.configuration) as admin:
        client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    created = core.create_namespaced_secret(namespace, secret(PULL_SECRET))
    created.data = {".dockerconfigjson": base64.b64encode(b'{"auths":{"x":{}}}').decode()}
    core.replace_namespaced_secret(PULL_SECRET, namespace, created)
    core.patch_namespaced_secret(PULL_SECRET, namespace, {"metadata": {"annotations": {"ecr-pullthrough/x": "1"}}})
    # A later update cannot add a ServiceAccount annotation either.
    refused_by_policy(
        lambda: core.patch_namespaced_secret(
            PULL_SECRET, namespace, {"metadata": {"annotations": {"kubernetes.io/service-account.name": "default"}}}
        )
    )
    # Only Secrets marked as its own: neither a new one without the mark, nor a user's Secret of the same name.
    unmarked = secret(PULL_SECRET)
    del unmarked["metadata"]["labels"]
    refused_by_policy(lambda: core.create_namespaced_secret(setup.workloads, unmarked))
    users = f"policy-users-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(setup.admin).create_namespace({"metadata": {"name": users}})
    client.CoreV1Api(setup.admin).create_namespaced_secret(users, unmarked)  # the administrator is not affected
    refused_by_policy(lambda: core.patch_namespaced_secret(PULL_SECRET, users, {"metadata": {"labels": OURS}}))
    refused_by_policy(
        lambda: core.patch_namespaced_secret(PULL_SECRET, users, {"data": {".dockerconfigjson": DOCKERCONFIG}})
    )


def test_the_controller_never_takes_another_releases_secret_but_adopts_one_of_0_1_0(setup: Setup) -> None:
    core = client.CoreV1Api(setup.controller)
    admin = client.CoreV1Api(setup.admin)
    namespace = f"policy-releases-{uuid.uuid4().hex[:6]}"
    admin.create_namespace({"metadata": {"name": namespace}})
    # Not even a new Secret that names another release, or none.
    for labels in ({MANAGED_BY: "ecr-pullthrough", INSTANCE_LABEL: "elsewhere.other"}, {MANAGED_BY: "ecr-pullthrough"}):
        refused_by_policy(
            lambda labels=labels: core.create_namespaced_secret(namespace, {**secret(PULL_SECRET), "metadata": {
                "name": PULL_SECRET, "labels": labels}})
        )  # fmt: skip
    # Another release's Secret stays that release's.
    admin.create_namespaced_secret(
        namespace, {**secret(PULL_SECRET), "metadata": {"name": PULL_SECRET, "labels": {**OURS, INSTANCE_LABEL: "x.y"}}}
    )
    refused_by_policy(lambda: core.patch_namespaced_secret(PULL_SECRET, namespace, {"metadata": {"labels": OURS}}))
    # A Secret of 0.1.0 (managed-by only) may be adopted: labelled as this release's.
    admin.delete_namespaced_secret(PULL_SECRET, namespace)
    admin.create_namespaced_secret(
        namespace, {**secret(PULL_SECRET), "metadata": {"name": PULL_SECRET, "labels": {MANAGED_BY: "ecr-pullthrough"}}}
    )
    refused_by_policy(
        lambda: core.patch_namespaced_secret(PULL_SECRET, namespace, {"data": {".dockerconfigjson": DOCKERCONFIG}})
    )  # not without the instance label
    core.patch_namespaced_secret(PULL_SECRET, namespace, {"metadata": {"labels": OURS}})


def test_the_webhook_configuration_may_change_only_in_its_ca_bundle(setup: Setup) -> None:
    admission = client.AdmissionregistrationV1Api(setup.controller)

    def current() -> dict[str, Any]:
        answer = admission.read_mutating_webhook_configuration(FULLNAME, _preload_content=False)
        return json.loads(answer.data)  # type: ignore[no-any-return]

    def changed(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        configuration = current()
        change(configuration)
        return configuration

    def set_hook(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda c: c["webhooks"][0].__setitem__(key, value)

    forbidden: list[Callable[[dict[str, Any]], None]] = [
        set_hook("failurePolicy", "Fail"),
        set_hook("namespaceSelector", {}),
        set_hook("objectSelector", {}),
        set_hook("timeoutSeconds", 30),
        set_hook("rules", [{**current()["webhooks"][0]["rules"][0], "resources": ["*"]}]),
        lambda c: c["webhooks"][0].__setitem__("clientConfig", {"url": "https://attacker.example/mutate"}),
        lambda c: c["webhooks"][0]["clientConfig"]["service"].__setitem__("name", "elsewhere"),
        lambda c: c["webhooks"].append({**c["webhooks"][0], "name": "second.ecr-pullthrough.io"}),
        lambda c: c["metadata"].setdefault("labels", {}).__setitem__("extra", "label"),
    ]
    for change in forbidden:
        refused_by_policy(
            lambda change=change: admission.replace_mutating_webhook_configuration(FULLNAME, changed(change))
        )

    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    admission.replace_mutating_webhook_configuration(
        FULLNAME, changed(lambda c: c["webhooks"][0]["clientConfig"].__setitem__("caBundle", bundle))
    )
    assert current()["webhooks"][0]["clientConfig"]["caBundle"] == bundle


def test_the_controller_does_its_whole_job_under_the_policy(setup: Setup, tmp_path: Path) -> None:
    args = (
        "--registry", REGISTRY, "--namespace", NAMESPACE, "--lease-name", CONTROLLER, "--instance", INSTANCE,
        "--secret-name", PULL_SECRET,
        "--webhook-tls-secret", TLS_SECRET, "--webhook-configuration", FULLNAME, "--webhook-service", WEBHOOK,
        "--token-refresh-floor-seconds", "1",
        "--api-qps", "1000", "--api-burst", "1000",  # other tests' namespaces get their secrets at once
    )  # fmt: skip
    core = client.CoreV1Api(setup.admin)
    admission = client.AdmissionregistrationV1Api(setup.admin)

    def pull_secret_written() -> bool:
        try:
            return core.read_namespaced_secret(PULL_SECRET, setup.workloads).type == "kubernetes.io/dockerconfigjson"
        except ApiException:
            return False

    def certificates_written() -> bool:
        try:
            tls = core.read_namespaced_secret(TLS_SECRET, NAMESPACE)
        except ApiException:
            return False
        [hook] = admission.read_mutating_webhook_configuration(FULLNAME).webhooks
        return bool(tls.data) and hook.client_config.ca_bundle == tls.data["ca.crt"]

    with fake_ecr() as ecr, controller_process(setup.kubeconfig, ecr, tmp_path, "policy", *args) as running:
        wait_for(pull_secret_written, timeout=30, what="the pull secret")
        wait_for(certificates_written, timeout=30, what="the TLS Secret and the caBundle")
        assert DENIED_BY_POLICY not in running.log()
        assert running.metric("ecr_pullthrough_secret_writes_total", result="error") == 0
