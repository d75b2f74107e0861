"""The Helm chart: lint and render over its values files, and install, upgrade and uninstall on the real API server."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.chart import CHART, REGISTRY, render
from tests.e2e.controllers import controller_process, token_kubeconfig
from tests.e2e.controlplane import ControlPlane
from tests.fake_ecr import fake_ecr
from tests.support import wait_for, webhook_process

VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# One values file per value that used to render into something else; its first line says the error expected.
BAD_VALUES = sorted((CHART / "ci" / "bad").glob("*.yaml"))
RELEASE = "chart-e2e"
NAMESPACE = "chart-e2e"
FULLNAME = f"{RELEASE}-ecr-pullthrough"
WEBHOOK = f"{FULLNAME}-webhook"
CONTROLLER = f"{FULLNAME}-controller"
TLS_SECRET = f"{WEBHOOK}-tls"
PULL_SECRET = "chart-e2e-pull"


def helm_run(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=check)


@pytest.mark.parametrize("values", VALUES, ids=[v.name for v in VALUES])
def test_lint_and_render_every_values_file(helm: Path, values: Path) -> None:
    helm_run(helm, "lint", "--strict", str(CHART), "--values", str(values))
    objects = render(helm, values=(values,))
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "MutatingWebhookConfiguration", "ClusterRole", "ConfigMap"} <= kinds
    [settings] = [
        obj for obj in objects if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-settings")
    ]
    assert settings["data"]["ECR_PULLTHROUGH_SECRET_NAME"] == "ecr-pullthrough"
    for deployment in (obj for obj in objects if obj["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert container["envFrom"] == [{"configMapRef": {"name": settings["metadata"]["name"]}}]
        if deployment["metadata"]["name"].endswith("-webhook"):
            assert pod["automountServiceAccountToken"] is False


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod the chart runs (Deployments and the `helm test` pod), by object name."""
    pods = {obj["metadata"]["name"]: obj["spec"]["template"]["spec"] for obj in objects if obj["kind"] == "Deployment"}
    pods.update({obj["metadata"]["name"]: obj["spec"] for obj in objects if obj["kind"] == "Pod"})
    return pods


@pytest.mark.parametrize("values", VALUES, ids=[v.name for v in VALUES])
def test_no_pod_mounts_the_ca_private_key(helm: Path, values: Path) -> None:
    """The TLS Secret also holds ca.key (certificates.mode controller): pods mount named keys only."""
    objects = render(helm, values=(values,))
    [hook] = [obj for obj in objects if obj["kind"] == "Deployment" and obj["metadata"]["name"].endswith("-webhook")]
    tls_secret = f"{hook['metadata']['name']}-tls"
    mounted: dict[str, set[str]] = {}
    for name, pod in pod_specs(objects).items():
        for volume in pod.get("volumes", []):
            sources = [volume] + [source for source in volume.get("projected", {}).get("sources", [])]
            for source in sources:
                if (source.get("secret") or {}).get(
                    "secretName", (source.get("secret") or {}).get("name")
                ) == tls_secret:
                    items = source["secret"].get("items")
                    assert items, f"{name} mounts the whole Secret {tls_secret}, ca.key included"
                    mounted.setdefault(name, set()).update(item["key"] for item in items)
    assert mounted.pop(hook["metadata"]["name"]) == {"tls.crt", "tls.key"}
    assert all(keys == {"ca.crt"} for keys in mounted.values()), mounted  # the `helm test` pod


def test_instance_metadata_is_off_unless_allowed(helm: Path) -> None:
    def controller(set_values: dict[str, str] | None = None) -> dict[str, Any]:
        objects = render(helm, show_only=("templates/controller-deployment.yaml",), set_values=set_values)
        [deployment] = [obj for obj in objects if obj["kind"] == "Deployment"]
        return deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]

    default = controller()
    assert {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"} in default["env"]
    assert "--allow-instance-metadata=false" in default["args"]
    allowed = controller({"controller.allowInstanceMetadata": "true"})
    assert "AWS_EC2_METADATA_DISABLED" not in {variable["name"] for variable in allowed.get("env", [])}
    assert "--allow-instance-metadata=true" in allowed["args"]


def test_the_controller_policy_follows_the_certificate_mode(helm: Path) -> None:
    def validations(mode: str) -> str:
        objects = render(helm, show_only=("templates/controller-policy.yaml",), set_values={"certificates.mode": mode})
        [policy] = [obj for obj in objects if obj["kind"] == "ValidatingAdmissionPolicy"]
        [binding] = [obj for obj in objects if obj["kind"] == "ValidatingAdmissionPolicyBinding"]
        assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
        assert policy["spec"]["failurePolicy"] == "Fail"
        [condition] = policy["spec"]["matchConditions"]
        assert condition["expression"] == (
            'request.userInfo.username == "system:serviceaccount:ecr-pullthrough:ecr-pullthrough-controller"'
        )
        return json.dumps(policy["spec"]["validations"])

    assert "ecr-pullthrough-webhook-tls" in validations("controller")
    assert "caBundle" in validations("controller")
    assert "ecr-pullthrough-webhook-tls" not in validations("certManager")


def test_the_chart_needs_kubernetes_1_30(helm: Path) -> None:
    """ValidatingAdmissionPolicy is GA (admissionregistration.k8s.io/v1) from 1.30; below, the chart refuses."""
    base = ("template", "x", str(CHART), "--set", f"registry={REGISTRY}")
    refused = helm_run(helm, *base, "--kube-version", "1.29.9", check=False)
    assert refused.returncode != 0
    assert "kubeVersion" in refused.stderr
    helm_run(helm, *base, "--kube-version", "1.30.0")


def test_the_webhook_configuration_sets_every_setting_explicitly(helm: Path) -> None:
    [configuration] = render(helm, show_only=("templates/mutatingwebhookconfiguration.yaml",))
    [hook] = configuration["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert 1 <= hook["timeoutSeconds"] <= 5
    assert [rule["resources"] for rule in hook["rules"]] == [["pods"], ["pods/ephemeralcontainers"]]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--set", "webhok.replicas=1"), "additional properties 'webhok' not allowed"),
        (("--set", "mode=loud"), "mode"),
        (("--set", "webhook.replicas=two"), "replicas"),
        (("--set", "registry=ghcr.io"), "registry"),
    ],
)
def test_the_schema_rejects_typos_and_wrong_types(helm: Path, arguments: tuple[str, ...], message: str) -> None:
    result = helm_run(helm, "template", "x", str(CHART), "--set", f"registry={REGISTRY}", *arguments, check=False)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize("values", BAD_VALUES, ids=[v.name for v in BAD_VALUES])
def test_each_bad_values_file_fails_to_render_with_its_message(helm: Path, values: Path) -> None:
    expected = values.read_text().splitlines()[0].removeprefix("# expect: ")
    result = helm_run(helm, "template", "x", str(CHART), "--values", str(values), check=False)
    assert result.returncode != 0, f"{values.name} rendered"
    assert expected in result.stderr


def test_set_account_id_says_to_use_set_string(helm: Path) -> None:
    base = ("template", "x", str(CHART), "--set", "region=us-east-1")
    refused = helm_run(helm, *base, "--set", "accountId=123456789012", check=False)
    assert refused.returncode != 0
    assert "accountId is a string: use --set-string accountId=<12 digits>" in refused.stderr
    only_settings = ("--show-only", "templates/configmap.yaml")
    accepted = helm_run(helm, *base, "--set-string", "accountId=012345678901", *only_settings)
    assert 'ECR_PULLTHROUGH_ACCOUNT_ID: "012345678901"' in accepted.stdout


def test_large_integers_render_as_integers(helm: Path, tmp_path: Path) -> None:
    """A values file's numbers are floats to Helm, and 1000000 rendered as 1e+06: every integer goes through int64."""
    values = tmp_path / "large-values.yaml"
    values.write_text(
        f"registry: {REGISTRY}\nwebhook: {{maxBodyBytes: 10485760, upstreamStatusMaxAgeSeconds: 604800}}\n"
        "controller: {resyncSeconds: 86400, verifySeconds: 86399}\n"
    )
    objects = render(helm, values=(values,))
    text = json.dumps(objects)
    assert "e+0" not in text
    assert "--max-body-bytes=10485760" in text
    assert "--resync-seconds=86400" in text
    assert "--upstream-status-max-age-seconds=604800" in text


def test_a_missing_registry_says_what_to_set(helm: Path) -> None:
    result = helm_run(helm, "template", "x", str(CHART), check=False)
    assert result.returncode != 0
    assert "set registry (your ECR registry host" in result.stderr


def test_the_values_table_in_the_chart_readme_is_current() -> None:
    from tests.chart_docs import values_table

    readme = (CHART / "README.md").read_text()
    assert values_table(CHART / "values.yaml") in readme, "run `make chart-docs`"


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, helm: Path) -> Iterator[list[str]]:
    control_plane.create_namespace(NAMESPACE)
    kubeconfig = str(control_plane.kubeconfig_path)
    # A pull Secret name of this module's own (see test_controller_policy.PULL_SECRET).
    common = ("--namespace", NAMESPACE, "--kubeconfig", kubeconfig, "--set", f"registry={REGISTRY}")
    common += ("--set", f"secretName={PULL_SECRET}")
    yield ["upgrade", RELEASE, str(CHART), *common]
    helm_run(helm, "uninstall", RELEASE, "--namespace", NAMESPACE, "--kubeconfig", kubeconfig, check=False)


def configuration(api: client.ApiClient) -> dict[str, Any]:
    answer = client.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(
        FULLNAME, _preload_content=False
    )
    return json.loads(answer.data)  # type: ignore[no-any-return]


def tls_secret(api: client.ApiClient) -> dict[str, Any] | None:
    try:
        return json.loads(
            client.CoreV1Api(api).read_namespaced_secret(TLS_SECRET, NAMESPACE, _preload_content=False).data
        )  # type: ignore[no-any-return]
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_install_certificates_upgrade_rules_and_uninstall(
    control_plane: ControlPlane, helm: Path, installed: list[str], tmp_path: Path
) -> None:
    # helm install without --wait: no controller-manager runs, so no pod would ever be ready.
    upgrade = installed
    helm_run(helm, *upgrade, "--install")
    with control_plane.api_client() as api:
        apps = client.AppsV1Api(api)
        assert {d.metadata.name for d in apps.list_namespaced_deployment(NAMESPACE).items} == {WEBHOOK, CONTROLLER}
        assert "caBundle" not in configuration(api)["webhooks"][0]["clientConfig"]

        # The controller, as deployed (the chart's account and flags), creates the certificates.
        token = control_plane.service_account_token(NAMESPACE, CONTROLLER)
        kubeconfig = token_kubeconfig(control_plane, token, tmp_path / "controller-kubeconfig")
        args = (
            "--registry", REGISTRY, "--namespace", NAMESPACE, "--lease-name", CONTROLLER,
            "--instance", f"{NAMESPACE}.{RELEASE}", "--secret-name", PULL_SECRET,
            "--webhook-tls-secret", TLS_SECRET, "--webhook-configuration", FULLNAME, "--webhook-service", WEBHOOK,
        )  # fmt: skip
        with fake_ecr() as ecr, controller_process(kubeconfig, ecr, tmp_path, "chart", *args):
            secret = wait_for(lambda: tls_secret(api), timeout=30, what="the webhook's TLS secret")
            bundle = wait_for(
                lambda: configuration(api)["webhooks"][0]["clientConfig"].get("caBundle"), what="caBundle"
            )
        assert base64.b64decode(bundle) == base64.b64decode(secret["data"]["ca.crt"])
        serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
        serving.verify_directly_issued_by(x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"])))
        names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"{WEBHOOK}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)

        # helm upgrade keeps the CA: no manifest names caBundle, so Helm's merge leaves it; the Secret is not Helm's.
        helm_run(helm, *upgrade, "--set", "webhook.replicas=3")
        assert configuration(api)["webhooks"][0]["clientConfig"]["caBundle"] == bundle
        after = tls_secret(api)
        assert after is not None
        assert after["data"] == secret["data"]

        # The chart's rules and selectors, as shipped, with only clientConfig pointed at a local webhook.
        with webhook_process(tmp_path, "--registry", REGISTRY) as webhook:
            shipped = configuration(api)
            shipped["webhooks"][0]["clientConfig"] = {
                "url": f"{webhook.url}/mutate",
                "caBundle": base64.b64encode(webhook.ca.cert_pem).decode(),
            }
            client.AdmissionregistrationV1Api(api).replace_mutating_webhook_configuration(FULLNAME, shipped)
            workloads = f"chart-workloads-{uuid.uuid4().hex[:6]}"
            control_plane.create_namespace(workloads)
            core = client.CoreV1Api(api)

            def created_image(namespace: str, labels: dict[str, str] | None = None) -> str:
                pod = client.V1Pod(
                    metadata=client.V1ObjectMeta(generate_name="chart-", labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx:1.27")]),
                )
                return str(core.create_namespaced_pod(namespace, pod, dry_run="All").spec.containers[0].image)

            rewritten = f"{REGISTRY}/docker-hub/library/nginx:1.27"
            wait_for(
                lambda: created_image(workloads) == rewritten, what="the chart's configuration to call the webhook"
            )
            assert created_image(workloads, {"ecr-pullthrough/skip": "true"}) == "nginx:1.27"
            assert created_image(NAMESPACE) == "nginx:1.27", "the release namespace is never touched"

        helm_run(
            helm, "uninstall", RELEASE, "--namespace", NAMESPACE, "--kubeconfig", str(control_plane.kubeconfig_path)
        )
        remaining = client.AdmissionregistrationV1Api(api).list_mutating_webhook_configuration().items
        assert FULLNAME not in {c.metadata.name for c in remaining}


@pytest.mark.parametrize("values", VALUES, ids=[v.name for v in VALUES])
def test_the_program_accepts_the_settings_the_chart_renders(
    helm: Path, values: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared ConfigMap as environment, each Deployment's args as flags: both processes start with them."""
    from webhook.core.rewrite import ECR_HOST
    from webhook.settings import ControllerSettings, WebhookSettings

    objects = render(helm, values=(values,))
    [settings] = [
        obj for obj in objects if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-settings")
    ]
    for name, value in settings["data"].items():
        monkeypatch.setenv(name, value)
    tls = {
        "/etc/ecr-pullthrough/tls/tls.crt": tmp_path / "tls.crt",
        "/etc/ecr-pullthrough/tls/tls.key": tmp_path / "tls.key",
    }
    for path in tls.values():
        path.write_text("placeholder")
    models = {"webhook": WebhookSettings, "controller": ControllerSettings}
    for deployment in (obj for obj in objects if obj["kind"] == "Deployment"):
        command, *args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        for mounted, local in tls.items():
            args = [arg.replace(mounted, str(local)) for arg in args]
        parsed = models[command](_cli_parse_args=args)  # type: ignore[call-arg]
        assert parsed.secret_name == "ecr-pullthrough"
        assert ECR_HOST.match(parsed.registry_host)  # ci/ipv6-values.yaml: the dual-stack endpoint, .on.aws


@pytest.mark.parametrize(
    ("status", "code", "printed"),
    [
        ({"docker.io": {"verified": True}, "quay.io": {"verified": True}}, 0, "quay.io: verified"),
        (
            {"docker.io": {"verified": True}, "quay.io": {"verified": False, "reason": "no rule for quay.io"}},
            1,
            "quay.io: UNVERIFIED: no rule for quay.io",
        ),
        ({}, 1, ""),
        (None, 1, "no upstream status yet"),
    ],
)
def test_helm_test_fails_while_an_upstream_is_unverified(
    helm: Path, tmp_path: Path, status: dict[str, Any] | None, code: int, printed: str
) -> None:
    [pod] = render(helm, show_only=("templates/tests/test-upstreams.yaml",))
    [volume] = pod["spec"]["volumes"]
    assert volume["configMap"]["name"] == "ecr-pullthrough-upstream-status"
    script = pod["spec"]["containers"][0]["command"][2]
    path = tmp_path / "status.json"
    if status is not None:
        path.write_text(json.dumps({"version": 1, "checkedAt": "2026-11-30T00:00:00+00:00", "upstreams": status}))
    local = script.replace("/etc/ecr-pullthrough/status/status.json", str(path))
    done = subprocess.run(["python3", "-c", local], capture_output=True, text=True, check=False)
    assert done.returncode == code, done.stdout + done.stderr
    assert printed in done.stdout
