"""The chart's `helm test` on the real API server: it passes when a dry-run pod comes back rewritten, and fails,
with the reason, when the upstream is unverified or the API server cannot reach the webhook.

The real `helm test` runs against an installed release: helm creates the test hooks (ServiceAccount,
Roles, Pod) and waits for the pod's phase. No kubelet runs here, so a stand-in plays its part for
the test pods only: it runs the pod's container args with the product's entry point (`python -m
webhook`, as the image's ENTRYPOINT `ecr-pullthrough`), with the pod's environment (the settings
ConfigMap) and the pod's ServiceAccount's token, then sets the pod's phase from the exit status.
The RBAC under test is the chart's: the check runs as the test's ServiceAccount.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.chart import CHART, REGISTRY
from tests.e2e.controllers import controller_process, status_file_sync, token_kubeconfig
from tests.e2e.controlplane import ControlPlane
from tests.e2e.fixtures_webhook import TARGET_LABEL
from tests.fake_ecr import FakeEcr, fake_ecr
from tests.support import WebhookProcess, wait_for, webhook_process
from webhook import certs


@dataclass
class StandInKubelet:
    """Runs the release's `helm test` pods to completion, as a kubelet would, and keeps each one's output."""

    plane: ControlPlane
    namespace: str
    folder: Path
    outputs: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with self.plane.api_client() as api:
            core = client.CoreV1Api(api)
            while not self.stop.is_set():
                pods = core.list_namespaced_pod(self.namespace, label_selector="app.kubernetes.io/component=test")
                for pod in pods.items:
                    if pod.status is None or pod.status.phase in (None, "Pending"):
                        self._run_pod(api, core, pod)
                self.stop.wait(0.2)

    def _run_pod(self, api: client.ApiClient, core: Any, pod: Any) -> None:
        name, uid = pod.metadata.name, pod.metadata.uid
        [container] = pod.spec.containers
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_PULLTHROUGH_", "KUBE"))}
        for source in container.env_from or []:
            settings = core.read_namespaced_config_map(source.config_map_ref.name, self.namespace)
            environment.update(settings.data or {})
        token = self.plane.service_account_token(self.namespace, pod.spec.service_account_name)
        kubeconfig = token_kubeconfig(self.plane, token, self.folder / f"kubeconfig-{uid}")
        environment["KUBECONFIG"] = str(kubeconfig)  # the client's fallback when not in a pod
        command = [sys.executable, "-m", "webhook", *(container.args or [])]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=environment)
        self.outputs[uid] = done.stdout + done.stderr
        phase = "Succeeded" if done.returncode == 0 else "Failed"
        try:
            core.patch_namespaced_pod_status(name, self.namespace, {"status": {"phase": phase}})
        except ApiException as error:
            if error.status != 404:
                raise


@dataclass
class Release:
    plane: ControlPlane
    helm: Path
    folder: Path
    ecr: FakeEcr
    name: str
    namespace: str
    tenant: str
    kubelet: StandInKubelet
    webhook: WebhookProcess | None = None
    stack: ExitStack = field(default_factory=ExitStack)
    webhook_stack: ExitStack = field(default_factory=ExitStack)
    shipped: dict[str, Any] = field(default_factory=dict)  # each webhook's clientConfig as the chart ships it

    @property
    def fullname(self) -> str:
        return f"{self.name}-ecr-pullthrough"

    @property
    def secret(self) -> str:
        return f"{self.name}-pull"

    @property
    def test_pod(self) -> str:
        return f"{self.fullname}-webhook-test"

    def helm_args(self) -> list[str]:
        return [
            "--namespace", self.namespace, "--kubeconfig", str(self.plane.kubeconfig_path),
            "--set", f"registry={REGISTRY}", "--set", f"secretName={self.secret}",
            "--set", f"helmTest.namespace={self.tenant}",
        ]  # fmt: skip

    def start_controller(self) -> None:
        args = (
            "--registry", REGISTRY, "--namespace", self.namespace, "--secret-name", self.secret,
            "--instance", f"{self.namespace}.{self.name}", "--lease-name", f"{self.fullname}-controller",
            "--upstream-status-configmap", f"{self.fullname}-upstream-status",
            "--exclude-namespace-selector", f"!{TARGET_LABEL}",
        )  # fmt: skip
        self.stack = ExitStack()
        self.stack.enter_context(
            controller_process(self.plane.kubeconfig_path, self.ecr, self.folder, f"{self.name}-controller", *args)
        )

    def start_webhook(self, *args: str, ca: certs.KeyPair | None = None) -> None:
        """The webhook as the chart runs it, reached by the chart's configuration (its clientConfig pointed here)."""
        self.webhook_stack = ExitStack()
        folder = self.folder / f"webhook-{uuid.uuid4().hex[:4]}"
        folder.mkdir()
        self.webhook = self.webhook_stack.enter_context(
            webhook_process(
                folder,
                "--registry",
                REGISTRY,
                "--secret-name",
                self.secret,
                "--upstream-status-file",
                str(self.folder / "status.json"),
                *args,
                ca=ca,
            )
        )
        self.point_configuration(self.webhook.ca.cert_pem)

    def point_configuration(self, ca_pem: bytes) -> None:
        assert self.webhook is not None
        with self.plane.api_client() as api:
            admission = client.AdmissionregistrationV1Api(api)
            live = json.loads(admission.read_mutating_webhook_configuration(self.fullname, _preload_content=False).data)
            for hook in live["webhooks"]:
                self.shipped.setdefault(hook["name"], hook["clientConfig"])
                hook["clientConfig"] = {
                    "url": f"{self.webhook.url}/mutate",
                    "caBundle": base64.b64encode(ca_pem).decode(),
                }
                # The API server is shared: act only on this module's namespaces.
                expressions = hook["namespaceSelector"]["matchExpressions"]
                if not any(e["key"] == TARGET_LABEL for e in expressions):
                    expressions.append({"key": TARGET_LABEL, "operator": "In", "values": [self.name]})
            admission.replace_mutating_webhook_configuration(self.fullname, live)

    def restore_configuration(self) -> None:
        """The clientConfig the chart ships, so that `helm upgrade` can patch it (a URL and a Service are exclusive)."""
        with self.plane.api_client() as api:
            admission = client.AdmissionregistrationV1Api(api)
            live = json.loads(admission.read_mutating_webhook_configuration(self.fullname, _preload_content=False).data)
            for hook in live["webhooks"]:
                hook["clientConfig"] = self.shipped[hook["name"]]
            admission.replace_mutating_webhook_configuration(self.fullname, live)

    def helm_test(self) -> tuple[int, str, str]:
        """`helm test` of the dry-run check: exit status, helm's output, and the test pod's output."""
        before = set(self.kubelet.outputs)
        command = [str(self.helm), "test", self.name, "--filter", f"name={self.test_pod}", "--timeout", "120s"]
        done = subprocess.run(
            [*command, *self.helm_args()[:4]], capture_output=True, text=True, timeout=180, check=False
        )
        new = [output for uid, output in self.kubelet.outputs.items() if uid not in before]
        return done.returncode, done.stdout + done.stderr, "".join(new)


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    folder = tmp_path_factory.mktemp("helm-test")
    suffix = uuid.uuid4().hex[:6]
    name, namespace, tenant = f"ht{suffix}", f"helm-test-{suffix}", f"helm-test-tenant-{suffix}"
    control_plane.create_namespace(namespace, labels={TARGET_LABEL: name})
    control_plane.create_namespace(tenant, labels={TARGET_LABEL: name})
    kubelet = StandInKubelet(control_plane, namespace, folder)
    thread = threading.Thread(target=kubelet.run, daemon=True)
    thread.start()
    with ExitStack() as stack, fake_ecr() as ecr:
        found = Release(control_plane, helm, folder, ecr, name, namespace, tenant, kubelet)
        # No --wait: no controller-manager or kubelet runs the Deployments; their processes run here.
        install = [str(helm), "install", name, str(CHART), *found.helm_args()]
        done = subprocess.run(install, check=False, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        stack.callback(
            lambda: subprocess.run(
                [str(helm), "uninstall", name, *found.helm_args()[:4]], check=False, capture_output=True
            )
        )
        found.start_controller()
        stack.callback(lambda: found.stack.close())
        stack.enter_context(
            status_file_sync(control_plane, folder / "status.json", namespace, f"{found.fullname}-upstream-status")
        )
        found.start_webhook()
        stack.callback(lambda: found.webhook_stack.close())
        yield found
        kubelet.stop.set()
        thread.join(10)


def passing(release: Release) -> tuple[int, str, str]:
    """`helm test` once the controller has verified and the webhook reads its status (a few seconds)."""
    return wait_for(
        lambda: (result := release.helm_test())[0] == 0 and result,
        timeout=60,
        interval=0.5,
        what="helm test to pass on a healthy release",
    )


def test_helm_test_passes_when_a_dry_run_pod_comes_back_rewritten(release: Release) -> None:
    _, helm_output, pod_output = passing(release)
    assert f"TEST SUITE:     {release.test_pod}" in helm_output or "Phase:          Succeeded" in helm_output
    rewritten = f"{REGISTRY}/docker-hub/library/hello-world:latest"
    assert (
        f"PASS  webhook answers: a dry-run pod in {release.tenant} came back rewritten: "
        f"hello-world:latest -> {rewritten}" in pod_output
    )
    with release.plane.api_client() as api:
        # hook-succeeded: the ServiceAccount and its permission to create pods are gone once the test passed.
        roles = client.RbacAuthorizationV1Api(api).list_namespaced_role(release.tenant).items
        assert release.test_pod not in {role.metadata.name for role in roles}
        pods = client.CoreV1Api(api).list_namespaced_pod(release.tenant).items
        assert pods == [], "the dry run stored nothing"


def test_helm_test_fails_with_the_reason_while_the_upstream_is_unverified(release: Release) -> None:
    passing(release)
    rule = release.ecr.rules.pop("docker-hub")
    try:
        release.stack.close()
        release.start_controller()  # verifies at start

        def failing() -> tuple[int, str, str] | None:
            result = release.helm_test()
            return result if "no pull-through cache rule" in result[2] else None

        code, helm_output, pod_output = wait_for(failing, timeout=60, interval=0.5, what="helm test to fail")
        assert code != 0
        assert f"pod {release.test_pod} failed" in helm_output
        assert (
            "FAIL  webhook answers: the webhook leaves hello-world:latest alone: "
            "no pull-through cache rule for registry-1.docker.io: create one with" in pod_output
        )
    finally:
        release.ecr.rules["docker-hub"] = rule
        release.stack.close()
        release.start_controller()
    passing(release)


def test_helm_test_fails_when_the_api_server_cannot_reach_the_webhook(release: Release) -> None:
    """Calling /readyz from inside the pod network passed here; the dry run does not."""
    passing(release)
    release.point_configuration(certs.make_ca("not-the-webhooks").cert_pem)  # TLS to the webhook now fails
    try:

        def failing() -> tuple[int, str, str] | None:
            result = release.helm_test()
            return result if result[0] != 0 else None

        _, _, pod_output = wait_for(failing, timeout=60, interval=0.5, what="helm test to fail")
        assert f"FAIL  webhook answers: a dry-run pod in {release.tenant} came back unchanged" in pod_output
        assert "failurePolicy Ignore hides it" in pod_output
    finally:
        assert release.webhook is not None
        release.point_configuration(release.webhook.ca.cert_pem)
    passing(release)


def test_helm_test_in_audit_mode_checks_the_annotation(release: Release, helm: Path) -> None:
    passing(release)
    release.restore_configuration()
    upgrade = [str(helm), "upgrade", release.name, str(CHART), *release.helm_args(), "--set", "mode=audit"]
    done = subprocess.run(upgrade, check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    release.webhook_stack.close()
    release.start_webhook("--mode", "audit")
    _, _, pod_output = passing(release)
    rewritten = f"{REGISTRY}/docker-hub/library/hello-world:latest"
    assert (
        f"PASS  webhook answers: a dry-run pod in {release.tenant} came back annotated (audit): "
        f"hello-world:latest -> {rewritten}" in pod_output
    )


def test_the_test_may_create_pods_only_in_its_namespace_and_read_only_the_status(helm: Path) -> None:
    from tests.e2e.chart import render

    objects = render(helm, show_only=("templates/tests/test-webhook.yaml",), set_values={"helmTest.namespace": "apps"})
    roles = {(o["metadata"]["namespace"], o["kind"]): o for o in objects if o["kind"] in ("Role", "RoleBinding")}
    assert roles[("apps", "Role")]["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]
    assert roles[("ecr-pullthrough", "Role")]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["ecr-pullthrough-upstream-status"],
            "verbs": ["get"],
        }
    ]
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for obj in objects:  # nothing outlives a passing test
        assert obj["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert "hook-succeeded" in obj["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    [pod] = [o for o in objects if o["kind"] == "Pod"]
    args = pod["spec"]["containers"][0]["args"]
    assert args[:2] == ["doctor", "--check=webhook"]
    assert '--exclude-namespaces=["kube-system","ecr-pullthrough"]' in args


def test_the_tests_service_account_may_only_dry_run_pods(
    control_plane: ControlPlane, helm: Path, tmp_path: Path
) -> None:
    from tests.e2e.chart import apply, render

    suffix = uuid.uuid4().hex[:6]
    namespace, tenant = f"helm-test-rbac-{suffix}", f"helm-test-rbac-tenant-{suffix}"
    control_plane.create_namespace(namespace)
    control_plane.create_namespace(tenant)
    objects = render(
        helm,
        release=f"rbac{suffix}",
        namespace=namespace,
        show_only=("templates/tests/test-webhook.yaml",),
        set_values={"helmTest.namespace": tenant},
    )
    with control_plane.api_client() as api:
        apply(api, [obj for obj in objects if obj["kind"] != "Pod"], namespace)
    [account] = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "ServiceAccount"]
    token = control_plane.service_account_token(namespace, account)
    pod = {"metadata": {"name": "real"}, "spec": {"containers": [{"name": "c", "image": "hello-world:latest"}]}}
    with control_plane.api_client(token) as api:
        core = client.CoreV1Api(api)
        assert core.create_namespaced_pod(tenant, pod, dry_run="All").metadata.name == "real"

        def refused() -> str | None:
            try:
                core.create_namespaced_pod(tenant, pod)
            except ApiException as error:
                return str(error.body) if error.status in (403, 422) else None
            with control_plane.api_client() as admin:  # the policy was not loaded yet: remove it, try again
                client.CoreV1Api(admin).delete_namespaced_pod("real", tenant, grace_period_seconds=0)
            return None

        message = wait_for(refused, timeout=30, interval=0.2, what="the policy to refuse a real pod")
        assert "the helm test of ecr-pullthrough may only dry-run pods" in message
        with pytest.raises(ApiException) as elsewhere:
            core.create_namespaced_pod(namespace, pod, dry_run="All")
        assert elsewhere.value.status == 403  # RBAC: pods only in helmTest.namespace
