"""Pull-secret mode node-role against the real API server: the chart's RBAC, the controller, the webhook,
and switching modes both ways (issue 20).

In node-role mode the nodes pull through the cache with their own role, so the
controller writes no Secret and may not even read one, and it verifies as the
node role (here a loopback IMDS hands out the node role's keys; the fake ECR
records which key asked for each token). The release here uses
certificates.mode certManager, so in node-role mode its controller has no
Secret permission at all, and the audit log shows it never asked for one.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.chart import REGISTRY, apply, installed, render
from tests.e2e.controllers import ControllerProcess, controller_process, token_kubeconfig
from tests.e2e.controlplane import ControlPlane
from tests.e2e.fixtures_webhook import annotations, create_pod, images, pod, pull_secrets, registered_webhook, unique
from tests.fake_ecr import FakeEcr, fake_ecr
from tests.fake_imds import ACCESS_KEY as NODE_KEY
from tests.fake_imds import ROLE as NODE_ROLE
from tests.fake_imds import FakeImds, fake_imds
from tests.support import wait_for
from webhook.core.mutate import ORIGINAL_IMAGES_ANNOTATION
from webhook.core.upstream_status import DOCUMENT_KEY, Check, StatusDocument, advance

RELEASE = NAMESPACE = "noderole-e2e"
FULLNAME = f"{RELEASE}-ecr-pullthrough"
CONTROLLER = f"{FULLNAME}-controller"  # ServiceAccount, Lease, policy
STATUS = f"{FULLNAME}-upstream-status"
PULL_SECRET = "noderole-e2e-pull"  # a name of this module's own (the API server is shared)
INSTANCE = f"{NAMESPACE}.{RELEASE}"
CONTROLLER_USER = f"system:serviceaccount:{NAMESPACE}:{CONTROLLER}"
NODE_ARN = f"arn:aws:sts::123456789012:assumed-role/{NODE_ROLE}/i-0123456789abcdef0"
# The controller serves only the namespaces of this module (others' namespaces fill the shared API server).
OWN_LABEL = "noderole-e2e/own"
FAST = (
    "--registry", REGISTRY,
    "--namespace", NAMESPACE,
    "--lease-name", CONTROLLER,
    "--instance", INSTANCE,
    "--secret-name", PULL_SECRET,
    "--lease-seconds", "4",
    "--renew-deadline-seconds", "3",
    "--retry-seconds", "0.5",
    "--upstream-status-configmap", STATUS,
    "--verify-seconds", "5",
    "--exclude-namespace-selector", f"!{OWN_LABEL}",
)  # fmt: skip
TEMPLATES = ("templates/controller-rbac.yaml", "templates/controller-policy.yaml")


def chart_objects(helm: Path, mode: str, **more: str) -> list[dict[str, Any]]:
    values = {"secretName": PULL_SECRET, "pullSecretMode": mode, "certificates.mode": "certManager", **more}
    return render(helm, release=RELEASE, namespace=NAMESPACE, set_values=values, show_only=TEMPLATES)


def install(control_plane: ControlPlane, helm: Path, mode: str) -> None:
    """What `helm upgrade` does to these objects: apply the rendered ones, delete those no longer rendered."""
    objects = chart_objects(helm, mode)
    rendered = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    with control_plane.api_client() as admin:
        apply(admin, objects, NAMESPACE)
        rbac = client.RbacAuthorizationV1Api(admin)
        for kind, delete in (
            ("ClusterRoleBinding", rbac.delete_cluster_role_binding),
            ("ClusterRole", rbac.delete_cluster_role),
        ):
            if (kind, CONTROLLER) not in rendered:
                try:
                    delete(CONTROLLER)
                except ApiException as error:
                    if error.status != 404:
                        raise


def may(control_plane: ControlPlane, token: str, verb: str, resource: str, namespace: str = "", name: str = "") -> bool:
    """What RBAC allows the controller's account (SelfSubjectAccessReview, as `kubectl auth can-i`)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace, "name": name}},
    }
    with control_plane.api_client(token) as api:
        answer = client.AuthorizationV1Api(api).create_self_subject_access_review(review)
    return bool(answer.status.allowed)


def controller_requests_on_secrets(control_plane: ControlPlane) -> list[str]:
    """Every request the controller's account made on Secrets, any verb, from the API server's audit log."""
    found = []
    for line in control_plane.audit_log.read_text().splitlines():
        event = json.loads(line)
        if (
            event.get("user", {}).get("username") == CONTROLLER_USER
            and (event.get("objectRef") or {}).get("resource") == "secrets"
        ):
            found.append(f"{event.get('verb')} {event.get('requestURI')}")
    return found


def published(core: client.CoreV1Api) -> StatusDocument | None:
    try:
        found = core.read_namespaced_config_map(STATUS, NAMESPACE)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    text = (found.data or {}).get(DOCUMENT_KEY)
    return StatusDocument.parse(text) if text else None


def docker_hub_verified_in(core: client.CoreV1Api, mode: str) -> bool:
    document = published(core)
    return document is not None and any(
        s.upstream == "docker.io" and s.verified and s.pull_secret_mode == mode for s in document.upstreams
    )


def holds_secret(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_secret(PULL_SECRET, namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def own_namespaces(control_plane: ControlPlane, prefix: str, count: int) -> list[str]:
    suffix = uuid.uuid4().hex[:6]
    names = [f"{prefix}-{i}-{suffix}" for i in range(count)]
    for name in names:
        control_plane.create_namespace(name, {OWN_LABEL: "true"})
    return names


@pytest.fixture(scope="module")
def token(control_plane: ControlPlane) -> str:
    try:
        control_plane.create_namespace(NAMESPACE)
    except ApiException as error:
        if error.status != 409:
            raise
    with control_plane.api_client() as admin:
        client.CoreV1Api(admin).create_namespaced_service_account(NAMESPACE, {"metadata": {"name": CONTROLLER}})
    return control_plane.service_account_token(NAMESPACE, CONTROLLER)


@pytest.fixture
def kubeconfig(control_plane: ControlPlane, token: str, tmp_path: Path) -> Path:
    return token_kubeconfig(control_plane, token, tmp_path / "kubeconfig")


@pytest.fixture
def core(control_plane: ControlPlane) -> Iterator[client.CoreV1Api]:
    with control_plane.api_client() as api:
        yield client.CoreV1Api(api)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[FakeEcr, FakeImds, dict[str, str]]]:
    """The fake ECR, the node's IMDS, and the environment of a controller pod with no role of its own."""
    with fake_ecr() as ecr, fake_imds() as imds:
        ecr.principals[NODE_KEY] = NODE_ARN
        environment = {
            "AWS_ENDPOINT_URL_ECR": ecr.url,
            "AWS_ENDPOINT_URL_STS": ecr.url,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "ECR_PULLTHROUGH_REGISTRY_API_URL": ecr.url,
        }
        yield ecr, imds, environment


@contextmanager
def node_role_controller(
    kubeconfig: Path, ecr: FakeEcr, folder: Path, environment: dict[str, str], identity: str
) -> Iterator[ControllerProcess]:
    with controller_process(
        kubeconfig, ecr, folder, identity, *FAST, "--pull-secret-mode", "node-role", aws=environment
    ) as running:
        yield running


def test_in_node_role_mode_the_controller_verifies_as_the_node_and_touches_no_secret(
    control_plane: ControlPlane,
    helm: Path,
    token: str,
    kubeconfig: Path,
    core: client.CoreV1Api,
    node: tuple[FakeEcr, FakeImds, dict[str, str]],
    tmp_path: Path,
) -> None:
    ecr, imds, environment = node
    install(control_plane, helm, "node-role")
    # The chart's RBAC in this mode: no Secret and no namespace, anywhere (the RBAC cache follows in a moment).
    wait_for(
        lambda: not may(control_plane, token, "list", "secrets", "", PULL_SECRET),
        timeout=30,
        what="RBAC without Secrets",
    )
    for verb, resource, namespace in [
        ("get", "secrets", NAMESPACE),
        ("create", "secrets", NAMESPACE),
        ("watch", "secrets", ""),
        ("list", "namespaces", ""),
    ]:
        assert not may(control_plane, token, verb, resource, namespace), f"{verb} {resource} is allowed"
    assert may(control_plane, token, "update", "configmaps", NAMESPACE, STATUS)
    names = own_namespaces(control_plane, "noderole", 3)
    before = len(controller_requests_on_secrets(control_plane))

    with node_role_controller(kubeconfig, ecr, tmp_path, environment, "node-1") as running:
        wait_for(lambda: docker_hub_verified_in(core, "node-role"), timeout=60, what="docker.io verified as the node")
        status, text = running.get("/readyz")

    assert status == 200, text
    assert json.loads(text)["awsIdentity"] == NODE_ARN
    # Every token, and so the manifest request through the cache, was the node role's.
    assert ecr.token_principals
    assert set(ecr.token_principals.values()) == {NODE_KEY}
    assert any(path.startswith("/v2/docker-hub/") for path in ecr.manifests)
    assert {"DescribePullThroughCacheRules", "ValidatePullThroughCacheRule"} <= set(ecr.calls)
    assert any(request.startswith("GET /latest/meta-data/iam/security-credentials/") for request in imds.requests)
    assert not any(holds_secret(core, name) for name in [*names, NAMESPACE])
    assert controller_requests_on_secrets(control_plane)[before:] == []
    [starting] = [json.loads(line) for line in running.log().splitlines() if '"controller starting"' in line]
    assert (starting["pullSecretMode"], starting["instanceMetadata"]) == ("node-role", "only"), starting


def test_in_node_role_mode_a_rewritten_pod_gets_no_pull_secret(control_plane: ControlPlane, tmp_path: Path) -> None:
    """Through the API server, the chart's webhook configuration; the status file as the controller writes it."""
    now = datetime.datetime.now(datetime.UTC)
    status_file = tmp_path / "status.json"

    def status_in(mode: str) -> str:
        return StatusDocument(now, (advance(None, Check("docker.io", "docker-hub"), now, REGISTRY, mode),)).to_json()

    status_file.write_text(status_in("node-role"))
    args = ("--pull-secret-mode", "node-role", "--upstream-status-file", str(status_file))
    with registered_webhook(control_plane, tmp_path, *args, target=unique("noderole")) as webhook:
        namespace = webhook.namespace("noderole-pods")
        with control_plane.api_client() as api:
            stored = create_pod(api, namespace, pod("web", {"main": "nginx:1.27", "org": "bitnami/redis:7.2"}))
            assert images(stored) == {
                "main": f"{REGISTRY}/docker-hub/library/nginx:1.27",
                "org": f"{REGISTRY}/docker-hub/bitnami/redis:7.2",
            }
            assert pull_secrets(stored) == []
            assert json.loads(annotations(stored)[ORIGINAL_IMAGES_ANNOTATION]) == {
                "main": "nginx:1.27",
                "org": "bitnami/redis:7.2",
            }
            # A verification made in secret mode (the controller's own token) is not trusted by a node-role
            # webhook: after a switch it waits for the node's own verification.
            status_file.write_text(status_in("secret"))
            counter = iter(range(1000))

            def left_alone() -> bool:
                created = create_pod(
                    api, namespace, pod(f"later-{next(counter)}", {"main": "nginx:1.27"}), dry_run=True
                )
                return images(created) == {"main": "nginx:1.27"}

            wait_for(left_alone, timeout=30, interval=0.2, what="the webhook to distrust a secret-mode verification")


def test_switching_modes_both_ways(
    control_plane: ControlPlane,
    helm: Path,
    token: str,
    kubeconfig: Path,
    core: client.CoreV1Api,
    node: tuple[FakeEcr, FakeImds, dict[str, str]],
    tmp_path: Path,
) -> None:
    ecr, _, node_environment = node
    names = own_namespaces(control_plane, "switch", 10)
    # secret mode: a Secret everywhere, verified with the controller's own token.
    install(control_plane, helm, "secret")
    wait_for(
        lambda: may(control_plane, token, "list", "secrets", "", PULL_SECRET), timeout=30, what="RBAC with Secrets"
    )
    wait_for(lambda: policy_refuses(control_plane, token, names[0]), timeout=30, what="the policy to be enforced")
    with controller_process(kubeconfig, ecr, tmp_path, "secret-1", *FAST, "--api-qps", "1000", "--api-burst", "1000"):
        wait_for(lambda: all(holds_secret(core, n) for n in names), timeout=60, what="the pull Secrets")
        wait_for(lambda: docker_hub_verified_in(core, "secret"), timeout=60, what="docker.io verified in secret mode")
    versions = {n: core.read_namespaced_secret(PULL_SECRET, n).metadata.resource_version for n in names}

    # secret -> node-role: the Secrets stay (pods rewritten earlier name them); the controller no longer touches them.
    install(control_plane, helm, "node-role")
    wait_for(
        lambda: not may(control_plane, token, "list", "secrets", "", PULL_SECRET),
        timeout=30,
        what="RBAC without Secrets",
    )
    before = len(controller_requests_on_secrets(control_plane))
    with node_role_controller(kubeconfig, ecr, tmp_path, node_environment, "node-2"):
        wait_for(lambda: docker_hub_verified_in(core, "node-role"), timeout=60, what="docker.io verified as the node")
    assert {n: core.read_namespaced_secret(PULL_SECRET, n).metadata.resource_version for n in names} == versions
    assert controller_requests_on_secrets(control_plane)[before:] == []

    # The optional cleanup removes this installation's Secrets only.
    others = own_namespaces(control_plane, "switch-others", 2)
    core.create_namespaced_secret(others[0], foreign_secret({}))
    core.create_namespaced_secret(
        others[1],
        foreign_secret({"app.kubernetes.io/managed-by": "ecr-pullthrough", "ecr-pullthrough/instance": "x.other"}),
    )
    listed = remove_pull_secrets(control_plane)
    assert listed.returncode == 0, listed.stderr
    assert {f"{n}/{PULL_SECRET}\twould delete" for n in names} <= set(listed.stdout.splitlines())
    assert all(holds_secret(core, n) for n in names), "without --delete nothing is deleted"
    removed = remove_pull_secrets(control_plane, "--delete")
    assert removed.returncode == 0, removed.stderr
    assert {f"{n}/{PULL_SECRET}\tdeleted" for n in names} <= set(removed.stdout.splitlines())
    assert not any(holds_secret(core, n) for n in names)
    assert all(holds_secret(core, n) for n in others), "a foreign Secret and another release's stay"

    # node-role -> secret: the Secrets are in every namespace before the status says secret mode, which is
    # what a secret-mode webhook waits for before it adds the pull secret to pods. Slow writes make the gap.
    install(control_plane, helm, "secret")
    wait_for(
        lambda: may(control_plane, token, "list", "secrets", "", PULL_SECRET), timeout=30, what="RBAC with Secrets"
    )
    wait_for(lambda: policy_refuses(control_plane, token, names[0]), timeout=30, what="the policy to be enforced")
    slow = ("--api-qps", "2", "--api-burst", "1")
    with controller_process(kubeconfig, ecr, tmp_path, "secret-2", *FAST, *slow):
        wait_for(lambda: docker_hub_verified_in(core, "secret"), timeout=90, interval=0.1, what="secret mode verified")
        missing = [n for n in names if not holds_secret(core, n)]
    assert missing == [], "the status said secret mode before the pull Secret was in every namespace"


def foreign_secret(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": PULL_SECRET, "labels": labels},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},  # {"auths":{}}
    }


def policy_refuses(control_plane: ControlPlane, token: str, namespace: str) -> bool:
    """The chart's policy is enforced some time after its creation: probe with a write it refuses (dry run)."""
    unmarked = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": PULL_SECRET}, "type": "Opaque"}
    with control_plane.api_client(token) as api:
        try:
            client.CoreV1Api(api).create_namespaced_secret(namespace, unmarked, dry_run="All")
        except ApiException as error:
            return error.status == 403 and "ValidatingAdmissionPolicy" in str(error.body)
    return False


def remove_pull_secrets(control_plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "webhook",
        "remove-pull-secrets",
        "--kubeconfig",
        str(control_plane.kubeconfig_path),
    ]
    command += ["--secret-name", PULL_SECRET, "--instance", INSTANCE, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


# -- the chart in node-role mode ---------------------------------------------------------


def rules(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(obj["kind"], rule) for obj in objects if obj["kind"] in ("Role", "ClusterRole") for rule in obj["rules"]]


@pytest.mark.parametrize("certificates", ["controller", "certManager"])
def test_the_chart_in_node_role_mode_renders_no_pull_secret_rbac(helm: Path, certificates: str) -> None:
    objects = installed(render(helm, set_values={"pullSecretMode": "node-role", "certificates.mode": certificates}))
    secret_rules = [(kind, rule) for kind, rule in rules(objects) if "secrets" in rule["resources"]]
    if certificates == "certManager":
        assert secret_rules == []
    else:  # only the webhook's own TLS Secret, in the release namespace
        assert [kind for kind, _ in secret_rules] == ["Role", "Role"]
        assert secret_rules[0][1]["resourceNames"] == ["ecr-pullthrough-webhook-tls"]
        assert secret_rules[1][1]["verbs"] == ["create"]
    assert not any("namespaces" in rule["resources"] for _, rule in rules(objects))
    # Events are written in the release namespace only (the pull-outcome guard reads them cluster-wide).
    assert not any(
        kind == "ClusterRole" and "events" in rule["resources"] and set(rule["verbs"]) - {"list", "watch"}
        for kind, rule in rules(objects)
    )
    [policy] = [obj for obj in objects if obj["kind"] == "ValidatingAdmissionPolicy"]
    secrets_rule = json.dumps(policy["spec"]["validations"][1])
    assert "kubernetes.io/dockerconfigjson" not in secrets_rule
    assert "writes no pull Secret (pullSecretMode node-role)" in secrets_rule
    [settings] = [obj for obj in objects if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("settings")]
    assert settings["data"]["ECR_PULLTHROUGH_PULL_SECRET_MODE"] == "node-role"
    deployments = {
        obj["metadata"]["name"]: obj["spec"]["template"]["spec"] for obj in objects if obj["kind"] == "Deployment"
    }
    webhook, controller = deployments["ecr-pullthrough-webhook"], deployments["ecr-pullthrough-controller"]
    # No ServiceAccount token where none is needed: the webhook talks to no API server. The controller needs
    # one for its Lease and status ConfigMap, and IMDS for the node role; the webhook is denied IMDS too.
    assert webhook["automountServiceAccountToken"] is False
    assert "--node-role-credentials=instance-metadata" in controller["containers"][0]["args"]
    assert "AWS_EC2_METADATA_DISABLED" not in {e["name"] for e in controller["containers"][0].get("env", [])}
    [account] = [
        obj for obj in objects if obj["kind"] == "ServiceAccount" and obj["metadata"]["name"].endswith("-controller")
    ]
    assert "annotations" not in account["metadata"]


def test_the_chart_in_secret_mode_keeps_its_pull_secret_rbac(helm: Path) -> None:
    objects = render(helm)
    [cluster_role] = [obj for obj in objects if obj["kind"] == "ClusterRole"]
    assert {"namespaces", "secrets", "events"} <= {r for rule in cluster_role["rules"] for r in rule["resources"]}


def test_mirrored_role_keeps_instance_metadata_off(helm: Path) -> None:
    objects = render(
        helm, set_values={"pullSecretMode": "node-role", "controller.nodeRoleCredentials": "mirrored-role"}
    )
    [controller] = [
        obj for obj in objects if obj["kind"] == "Deployment" and obj["metadata"]["name"].endswith("-controller")
    ]
    container = controller["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"} in container["env"]
    assert "--node-role-credentials=mirrored-role" in container["args"]


def test_node_role_without_a_cluster_role_keeps_its_role(helm: Path) -> None:
    """cert-manager certificates and no pull-outcome guard: nothing cluster-wide, but the Lease and status still."""
    objects = installed(
        render(
            helm,
            set_values={
                "pullSecretMode": "node-role",
                "certificates.mode": "certManager",
                "controller.pullGuard.enabled": "false",
            },
            show_only=("templates/controller-rbac.yaml",),
        )
    )
    assert sorted(obj["kind"] for obj in objects) == ["Role", "RoleBinding", "ServiceAccount"]
