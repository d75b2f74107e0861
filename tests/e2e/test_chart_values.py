"""The values operators expect (ServiceAccounts, labels, annotations, escape hatches, scheduling, controller
tuning, webhook scope), the NOTES, the cleanup hook and the upgrade from 0.1.0: rendered, and installed on the
real API server."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.chart import CHART, REGISTRY, apply, installed, render
from tests.e2e.controllers import token_kubeconfig
from tests.e2e.controlplane import ControlPlane
from tests.support import wait_for, webhook_process
from webhook.settings import CommonSettings, ControllerSettings

CONVENTIONS = CHART / "ci" / "conventions-values.yaml"
CHART_0_1_0 = Path(__file__).resolve().parents[1] / "fixtures" / "chart-0.1.0"
CHART_LABELS = ("helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by")


def helm_run(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {args[0]} failed:\n{done.stderr}")
    return done


def named(objects: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    return found


def pod_spec(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return named(objects, "Deployment", f"-{component}")["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def notes(
    helm: Path,
    folder: Path,
    *,
    release: str = "ecr-pullthrough",
    namespace: str = "ecr-pullthrough",
    set_values: dict[str, str] | None = None,
    set_string: dict[str, str] | None = None,
) -> str:
    """NOTES.txt as `helm install` prints it (helm template leaves NOTES out: render it as a template)."""
    chart = folder / "chart"
    if not chart.exists():
        shutil.copytree(CHART, chart)
        text = (CHART / "templates" / "NOTES.txt").read_text()
        (chart / "templates" / "_notes_check.tpl").write_text('{{- define "notes-check" -}}' + text + "{{- end -}}")
        (chart / "templates" / "notes-check.yaml").write_text('notes: {{ include "notes-check" . | toJson }}\n')
    command = ["template", release, str(chart), "--namespace", namespace, "--show-only", "templates/notes-check.yaml"]
    given = {**(set_values or {}), **(set_string or {})}
    if "region" not in given and "registry" not in given:
        command += ["--set", f"registry={REGISTRY}"]
    for key, value in (set_values or {}).items():
        command += ["--set", f"{key}={value}"]
    for key, value in (set_string or {}).items():
        command += ["--set-string", f"{key}={value}"]
    return str(yaml.safe_load(helm_run(helm, *command).stdout)["notes"])


def test_every_value_added_since_0_1_0_has_its_default_for_reuse_values() -> None:
    """`helm upgrade --reuse-values` renders with 0.1.0's values: upgrade-defaults.yaml fills in the rest."""

    def added(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        found = {}
        for key, value in new.items():
            if key not in old:
                found[key] = value
            elif isinstance(value, dict) and isinstance(old[key], dict) and (deeper := added(value, old[key])):
                found[key] = deeper
        return found

    current = yaml.safe_load((CHART / "values.yaml").read_text())
    previous = yaml.safe_load((CHART_0_1_0 / "values.yaml").read_text())
    assert yaml.safe_load((CHART / "upgrade-defaults.yaml").read_text()) == added(current, previous)


# -- ServiceAccounts ---------------------------------------------------------------------------------------


def test_service_accounts_are_created_by_default(helm: Path) -> None:
    objects = installed(render(helm))
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    assert set(accounts) == {"ecr-pullthrough-controller", "ecr-pullthrough-webhook"}
    assert accounts["ecr-pullthrough-webhook"]["automountServiceAccountToken"] is False
    assert pod_spec(objects, "controller")["serviceAccountName"] == "ecr-pullthrough-controller"
    assert pod_spec(objects, "webhook")["serviceAccountName"] == "ecr-pullthrough-webhook"


def test_an_existing_controller_service_account_gets_the_rbac_and_the_policy(helm: Path) -> None:
    """EKS users pre-create the IRSA ServiceAccount with eksctl or Terraform: the chart binds to it by name."""
    existing = {"controller.serviceAccount.create": "false", "controller.serviceAccount.name": "irsa-made"}
    objects = installed(render(helm, set_values=existing | {"webhook.serviceAccount.create": "false"}))
    assert [o for o in objects if o["kind"] == "ServiceAccount"] == []
    assert pod_spec(objects, "controller")["serviceAccountName"] == "irsa-made"
    assert pod_spec(objects, "webhook")["serviceAccountName"] == "default"
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = named(objects, kind, "-controller")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "irsa-made", "namespace": "ecr-pullthrough"}]
    [condition] = named(objects, "ValidatingAdmissionPolicy")["spec"]["matchConditions"]
    assert condition["expression"] == 'request.userInfo.username == "system:serviceaccount:ecr-pullthrough:irsa-made"'


def test_service_account_names_and_labels(helm: Path) -> None:
    objects = render(helm, values=(CONVENTIONS,))
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    assert {"pullthrough-irsa", "pullthrough-webhook"} <= set(accounts)
    controller = accounts["pullthrough-irsa"]["metadata"]
    assert controller["labels"]["example.com/kind"] == "controller"
    assert controller["labels"]["app.kubernetes.io/component"] == "controller"
    assert controller["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ecr-pullthrough"}
    assert accounts["pullthrough-webhook"]["metadata"]["labels"]["example.com/kind"] == "webhook"
    assert pod_spec(objects, "controller")["serviceAccountName"] == "pullthrough-irsa"


@pytest.mark.parametrize(
    "release",
    ["ecr-pullthrough", "prod", "a-release-name-53-characters-long-so-object-names-cut"],
)
def test_notes_name_the_service_account_irsa_must_trust(helm: Path, tmp_path: Path, release: str) -> None:
    objects = render(helm, release=release, namespace="platform-tools")
    account = pod_spec(objects, "controller")["serviceAccountName"]
    assert account in {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    text = notes(helm, tmp_path, release=release, namespace="platform-tools")
    assert f"IRSA:          system:serviceaccount:platform-tools:{account}\n" in text
    assert f"--namespace platform-tools --service-account {account} " in text


# -- Labels, annotations, escape hatches ---------------------------------------------------------------------


def test_common_labels_reach_every_object_and_never_override_the_charts(helm: Path) -> None:
    objects = render(helm, values=(CONVENTIONS,), set_values={"commonLabels.app\\.kubernetes\\.io/name": "evil"})
    assert len(objects) > 20
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["team"] == "platform", obj["metadata"]["name"]
        assert labels["cost-center"] == "42"
        assert labels["app.kubernetes.io/name"] == "ecr-pullthrough"
        assert all(key in labels for key in CHART_LABELS)
    for component, extra in (("webhook", "admission"), ("controller", "control")):
        deployment = named(objects, "Deployment", f"-{component}")
        template = deployment["spec"]["template"]["metadata"]["labels"]
        assert template["tier"] == extra
        assert template["team"] == "platform"
        assert deployment["spec"]["selector"]["matchLabels"].items() <= template.items()
        assert template["app.kubernetes.io/name"] == "ecr-pullthrough"


def test_deployment_service_and_configuration_annotations(helm: Path) -> None:
    objects = render(helm, values=(CONVENTIONS,))
    for component, scrape in (("webhook", "false"), ("controller", "true")):
        assert named(objects, "Deployment", f"-{component}")["metadata"]["annotations"] == {
            "example.com/owner": "platform"
        }
        assert named(objects, "Service", f"-{component}")["metadata"]["annotations"] == {"example.com/scrape": scrape}
    configuration = named(objects, "MutatingWebhookConfiguration")["metadata"]
    assert configuration["labels"]["example.com/webhook"] == "mutating"
    assert configuration["annotations"] == {"example.com/contact": "platform@example.com"}
    # cert-manager's injection annotation is the chart's own and stays next to yours.
    cert_manager = render(
        helm,
        show_only=("templates/mutatingwebhookconfiguration.yaml",),
        set_values={"certificates.mode": "certManager", "webhook.configurationAnnotations.a": "b"},
    )
    assert cert_manager[0]["metadata"]["annotations"] == {
        "a": "b",
        "cert-manager.io/inject-ca-from": "ecr-pullthrough/ecr-pullthrough-webhook",
    }


def test_extra_args_env_and_volumes(helm: Path) -> None:
    objects = render(helm, values=(CONVENTIONS,))
    webhook, controller = pod_spec(objects, "webhook"), pod_spec(objects, "controller")
    assert webhook["containers"][0]["args"][-1] == "--max-in-flight=64"
    assert controller["containers"][0]["args"][-1] == "--log-level=debug"
    assert webhook["containers"][0]["env"] == [{"name": "TZ", "value": "UTC"}]
    env = controller["containers"][0]["env"]
    assert {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"} in env  # the chart's own stays
    assert {"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"} in env
    assert {"name": "NO_PROXY", "value": "10.100.0.1,.svc,.cluster.local"} in env
    assert {"name": "scratch", "emptyDir": {}} in webhook["volumes"]
    assert {"name": "scratch", "mountPath": "/scratch"} in webhook["containers"][0]["volumeMounts"]
    assert "proxy-ca" in {v["name"] for v in controller["volumes"]}
    assert "/etc/proxy-ca" in {m["mountPath"] for m in controller["containers"][0]["volumeMounts"]}
    # With instance metadata allowed and extraEnv set, env holds only yours.
    allowed = render(
        helm,
        show_only=("templates/controller-deployment.yaml",),
        set_values={"controller.allowInstanceMetadata": "true", "controller.extraEnv[0].name": "A"}
        | {"controller.extraEnv[0].value": "b"},
    )
    assert pod_spec(allowed, "controller")["containers"][0]["env"] == [{"name": "A", "value": "b"}]


# -- Scheduling --------------------------------------------------------------------------------------------


def webhook_spread(helm: Path, set_values: dict[str, str] | None = None) -> list[dict[str, Any]] | None:
    objects = render(helm, show_only=("templates/webhook-deployment.yaml",), set_values=set_values)
    return pod_spec(objects, "webhook").get("topologySpreadConstraints")


def test_topology_spread_constraints_and_the_deprecated_switch(helm: Path, tmp_path: Path) -> None:
    own = {"app.kubernetes.io/name": "ecr-pullthrough", "app.kubernetes.io/instance": "ecr-pullthrough"}
    selector = {"matchLabels": own | {"app.kubernetes.io/component": "webhook"}}
    default = webhook_spread(helm)
    assert default == [
        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector}
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ], "as chart 0.1.0 and 0.2.0 rendered them"
    assert webhook_spread(helm, {"webhook.topologySpread": "true"}) == default
    assert webhook_spread(helm, {"webhook.topologySpread": "false"}) is None
    assert webhook_spread(helm, {"webhook.topologySpreadConstraints": "null"}) is None
    given = render(helm, values=(CONVENTIONS,))
    assert pod_spec(given, "webhook")["topologySpreadConstraints"] == [
        {
            "maxSkew": 2,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": selector,
        }
    ]
    assert pod_spec(given, "controller")["topologySpreadConstraints"][0]["labelSelector"] == {
        "matchLabels": own | {"app.kubernetes.io/component": "controller"}
    }
    assert "topologySpreadConstraints" not in pod_spec(render(helm), "controller")
    # A labelSelector you give is yours.
    custom = {"webhook.topologySpreadConstraints[0].maxSkew": "1"}
    custom |= {"webhook.topologySpreadConstraints[0].topologyKey": "zone"}
    custom |= {"webhook.topologySpreadConstraints[0].whenUnsatisfiable": "ScheduleAnyway"}
    custom |= {"webhook.topologySpreadConstraints[0].labelSelector.matchLabels.app": "x"}
    spread = webhook_spread(helm, custom)
    assert spread is not None
    assert spread[0]["labelSelector"] == {"matchLabels": {"app": "x"}}

    # The deprecated value still in use says what to set instead; unset, nothing is said.
    assert "DEPRECATED" not in notes(helm, tmp_path)
    off = notes(helm, tmp_path, set_values={"webhook.topologySpread": "false"})
    assert "webhook.topologySpread is deprecated since chart 0.3.0" in off
    assert "set webhook.topologySpreadConstraints: [] instead" in off
    on = notes(helm, tmp_path, set_values={"webhook.topologySpread": "true"})
    assert "webhook.topologySpread is deprecated since chart 0.3.0 and will be removed: remove it" in on


def test_update_strategy_and_revision_history(helm: Path) -> None:
    default = render(helm)
    for component in ("webhook", "controller"):
        spec = named(default, "Deployment", f"-{component}")["spec"]
        assert spec["revisionHistoryLimit"] == 10
        assert "strategy" not in spec
    given = render(helm, values=(CONVENTIONS,))
    webhook = named(given, "Deployment", "-webhook")["spec"]
    assert webhook["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert webhook["revisionHistoryLimit"] == 3
    controller = named(given, "Deployment", "-controller")["spec"]
    assert controller["strategy"] == {"type": "Recreate"}
    assert controller["revisionHistoryLimit"] == 5


# -- Controller tuning ----------------------------------------------------------------------------------------


def test_controller_tuning_reaches_the_program(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def parsed(values: tuple[Path, ...] = ()) -> ControllerSettings:
        objects = render(helm, values=values)
        for key, value in named(objects, "ConfigMap", "-settings")["data"].items():
            monkeypatch.setenv(key, value)
        _, *args = pod_spec(objects, "controller")["containers"][0]["args"]
        return ControllerSettings(_cli_parse_args=args)  # type: ignore[call-arg]

    default, tuned = parsed(), parsed((CONVENTIONS,))
    program = ControllerSettings.model_fields
    for field in ("workers", "api_qps", "api_burst", "lease_seconds", "renew_deadline_seconds", "retry_seconds"):
        assert getattr(default, field) == program[field].default, field
    for field in ("aws_connect_timeout", "aws_read_timeout", "aws_max_attempts", "certificate_check_seconds"):
        assert getattr(default, field) == program[field].default, field
    assert (tuned.workers, tuned.api_qps, tuned.api_burst) == (8, 50, 100)
    assert (tuned.lease_seconds, tuned.renew_deadline_seconds, tuned.retry_seconds) == (30, 20, 4)
    assert (tuned.aws_connect_timeout, tuned.aws_read_timeout, tuned.aws_max_attempts) == (5, 10, 5)
    assert tuned.log_level == "debug"  # extraArgs


# -- Webhook scope -----------------------------------------------------------------------------------------


def test_your_selectors_and_conditions_are_anded_with_the_charts(helm: Path) -> None:
    [hook] = named(render(helm, values=(CONVENTIONS,)), "MutatingWebhookConfiguration")["webhooks"]
    assert hook["namespaceSelector"]["matchLabels"] == {"ecr-pullthrough": "enabled"}
    keys = [e["key"] for e in hook["namespaceSelector"]["matchExpressions"]]
    assert keys == ["ecr-pullthrough/skip", "kubernetes.io/metadata.name"]
    assert hook["objectSelector"]["matchExpressions"] == [
        {"key": "app", "operator": "NotIn", "values": ["legacy"]},
        {"key": "ecr-pullthrough/skip", "operator": "NotIn", "values": ["true"]},
    ]
    assert [c["name"] for c in hook["matchConditions"]] == ["not-gpu-jobs"]
    # Several entries (excludeNamespaceSelector with two requirements): each gets yours.
    hooks = named(
        render(helm, values=(CONVENTIONS,), set_values={"excludeNamespaceSelector": "team=legacy\\,env!=prod"}),
        "MutatingWebhookConfiguration",
    )["webhooks"]
    assert len(hooks) == 2
    assert all(h["namespaceSelector"]["matchLabels"] == {"ecr-pullthrough": "enabled"} for h in hooks)
    assert all(h["matchConditions"] == hook["matchConditions"] for h in hooks)


# -- NOTES ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["us-east-1", "cn-north-1", "cn-northwest-1"])
def test_notes_name_the_registry_the_program_uses(helm: Path, tmp_path: Path, region: str) -> None:
    text = notes(helm, tmp_path, set_values={"region": region}, set_string={"accountId": "012345678901"})
    host = CommonSettings(account_id="012345678901", region=region).registry_host  # type: ignore[call-arg]
    assert host.endswith(".amazonaws.com.cn" if region.startswith("cn-") else ".amazonaws.com")
    assert f"prints {host}/docker-hub/library/nginx:1.27 once the upstream is verified" in text
    assert f"pulled through {host}/docker-hub." in text


def test_notes_promise_nothing_in_audit_mode(helm: Path, tmp_path: Path) -> None:
    enforce = notes(helm, tmp_path)
    assert "Rewriting starts once the controller has verified the upstream" in enforce
    assert "Docker Hub images of new pods are then pulled through" in enforce
    audit = notes(helm, tmp_path, set_values={"mode": "audit"})
    assert "Audit mode: nothing is rewritten" in audit
    assert "pulled through" not in audit
    assert "-o jsonpath='{.metadata.annotations.ecr-pullthrough/would-rewrite}" in audit
    assert '{"ecr-pullthrough-check":"' + REGISTRY + '/docker-hub/library/nginx:1.27"}' in audit
    for text in (enforce, audit):
        [dry_run] = [line for line in text.splitlines() if "--dry-run=server" in line]
        assert dry_run.strip().startswith("kubectl -n <namespace> run ecr-pullthrough-check")


def test_notes_find_the_leaders_logs(helm: Path, tmp_path: Path) -> None:
    """The Lease names the leader by its identity, `<pod name>-<8 hex>`: the NOTES command turns it into the pod."""
    text = notes(helm, tmp_path)
    [line] = [line.strip() for line in text.splitlines() if line.strip().startswith("kubectl") and " logs " in line]
    assert "get lease ecr-pullthrough-controller -o jsonpath='{.spec.holderIdentity}'" in line
    sed = line.split("| ", 1)[1].removesuffix(')"')
    identity = ControllerSettings.model_fields["identity"].default_factory()  # type: ignore[call-arg,misc]
    done = subprocess.run(["sh", "-c", sed], input=identity, capture_output=True, text=True, check=True)
    assert done.stdout == socket.gethostname()  # the pod's name, in a pod


# -- Cleanup on uninstall -------------------------------------------------------------------------------------


def test_cleanup_is_off_by_default(helm: Path) -> None:
    assert not [o for o in render(helm) if "cleanup" in o["metadata"]["name"]]


def test_the_cleanup_hook_deletes_only_what_the_release_owns(
    control_plane: ControlPlane, helm: Path, tmp_path: Path
) -> None:
    release = f"cleanup-{uuid.uuid4().hex[:4]}"
    secret_name = f"pull-{release}"
    hook = render(
        helm,
        release=release,
        namespace=release,
        show_only=("templates/cleanup-hook.yaml",),
        set_values={"cleanupOnUninstall.enabled": "true", "secretName": secret_name},
    )
    assert all(o["metadata"]["annotations"]["helm.sh/hook"] == "post-delete" for o in hook)
    job = named(hook, "Job")
    control_plane.create_namespace(release)
    workloads = [f"{release}-app-{i}" for i in range(2)]
    for namespace in workloads:
        control_plane.create_namespace(namespace)
    instance = f"{release}.{release}"
    fullname = f"{release}-ecr-pullthrough"

    def pull_secret(instance: str) -> dict[str, Any]:
        labels = {"app.kubernetes.io/managed-by": "ecr-pullthrough", "ecr-pullthrough/instance": instance}
        data = {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()}
        return {"metadata": {"name": secret_name, "labels": labels}, "type": "kubernetes.io/dockerconfigjson"} | {
            "data": data
        }

    with control_plane.api_client() as api:
        core, coordination = client.CoreV1Api(api), client.CoordinationV1Api(api)
        apply(api, [o for o in hook if o["kind"] != "Job"], release)
        client.BatchV1Api(api).create_namespaced_job(release, job, dry_run="All")  # the API server takes it
        core.create_namespaced_secret(workloads[0], pull_secret(instance))
        core.create_namespaced_secret(release, pull_secret(instance))
        core.create_namespaced_secret(workloads[1], pull_secret("elsewhere.another-release"))
        core.create_namespaced_secret(workloads[1], {"metadata": {"name": "unrelated"}, "type": "Opaque"})
        core.create_namespaced_secret(release, {"metadata": {"name": f"{fullname}-webhook-tls"}, "type": "Opaque"})
        core.create_namespaced_config_map(release, {"metadata": {"name": f"{fullname}-upstream-status"}})
        core.create_namespaced_config_map(release, {"metadata": {"name": "unrelated"}})
        coordination.create_namespaced_lease(release, {"metadata": {"name": f"{fullname}-controller"}})

        token = control_plane.service_account_token(release, f"{fullname}-cleanup")
        kubeconfig = token_kubeconfig(control_plane, token, tmp_path / "cleanup-kubeconfig")
        container = job["spec"]["template"]["spec"]["containers"][0]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        environment |= {e["name"]: e["value"] for e in container["env"]} | {"KUBECONFIG": str(kubeconfig)}
        script = container["command"][2]

        def run() -> subprocess.CompletedProcess[str]:
            # RBAC for a new binding takes effect at once; the token is valid at once.
            return subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)

        done = run()
        assert done.returncode == 0, done.stderr
        assert f"deleted Secret {workloads[0]}/{secret_name}" in done.stdout

        def exists(read: Any, *args: str) -> bool:
            try:
                read(*args)
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            return True

        assert not exists(core.read_namespaced_secret, secret_name, workloads[0])
        assert not exists(core.read_namespaced_secret, secret_name, release)
        assert not exists(core.read_namespaced_secret, f"{fullname}-webhook-tls", release)
        assert not exists(core.read_namespaced_config_map, f"{fullname}-upstream-status", release)
        assert not exists(coordination.read_namespaced_lease, f"{fullname}-controller", release)
        # Another release's Secret of the same name, and anything else, stays.
        assert exists(core.read_namespaced_secret, secret_name, workloads[1])
        assert exists(core.read_namespaced_secret, "unrelated", workloads[1])
        assert exists(core.read_namespaced_config_map, "unrelated", release)
        # Run again (a retried Job): everything already gone is fine.
        again = run()
        assert again.returncode == 0, again.stderr
        assert "already gone" in again.stdout

    # Least privilege: the hook's account can delete nothing else.
    with control_plane.api_client(token) as hook_api:
        hook_core = client.CoreV1Api(hook_api)
        for call, args in (
            (hook_core.delete_namespaced_secret, ("unrelated", workloads[1])),
            (hook_core.delete_namespaced_config_map, ("unrelated", release)),
            (hook_core.list_namespaced_secret, (workloads[1],)),
        ):
            with pytest.raises(ApiException) as refused:
                call(*args)
            assert refused.value.status == 403


def test_notes_warn_when_cleanup_is_on(helm: Path, tmp_path: Path) -> None:
    text = notes(helm, tmp_path, set_values={"cleanupOnUninstall.enabled": "true"})
    assert "imagePullPolicy: Always then fail on their next container restart" in text
    assert "imagePullPolicy" not in notes(helm, tmp_path)


# -- On the real API server ------------------------------------------------------------------------------------

MONITORING_CRDS = {"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}


def monitoring_crds(api: client.ApiClient) -> None:
    """Stand-ins for the Prometheus Operator's CRDs (no schema of theirs: the objects are checked elsewhere)."""
    extensions = client.ApiextensionsV1Api(api)
    for kind, plural in MONITORING_CRDS.items():
        body = {
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                ],
            },
        }
        try:
            extensions.create_custom_resource_definition(body)
        except ApiException as error:
            if error.status != 409:
                raise

    def established() -> bool:
        return all(
            any(
                c.type == "Established" and c.status == "True"
                for c in (extensions.read_custom_resource_definition(f"{p}.monitoring.coreos.com").status.conditions)
                or []
            )
            for p in MONITORING_CRDS.values()
        )

    wait_for(established, timeout=30, what="the monitoring CRDs")


@pytest.fixture
def release(control_plane: ControlPlane, helm: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    name = f"values-{uuid.uuid4().hex[:4]}"
    control_plane.create_namespace(name)
    kube = ("--namespace", name, "--kubeconfig", str(control_plane.kubeconfig_path))
    yield name, kube
    # --no-hooks: the cleanup Job would wait for a controller-manager that does not run here.
    helm_run(helm, "uninstall", name, *kube, "--no-hooks", check=False)


def test_every_new_value_installs_and_the_scope_holds_on_the_api_server(
    control_plane: ControlPlane, helm: Path, release: tuple[str, tuple[str, ...]], tmp_path: Path
) -> None:
    name, kube = release
    with control_plane.api_client() as api:
        monitoring_crds(api)
        secret = ("--set", f"secretName={name}-pull")
        installed = helm_run(helm, "install", name, str(CHART), *kube, "--values", str(CONVENTIONS), *secret)
        assert "DEPRECATED" not in installed.stdout
        assert f"IRSA:          system:serviceaccount:{name}:pullthrough-irsa" in installed.stdout
        custom = client.CustomObjectsApi(api)
        for plural in MONITORING_CRDS.values():
            custom.get_namespaced_custom_object("monitoring.coreos.com", "v1", name, plural, f"{name}-ecr-pullthrough")
        dashboard = client.CoreV1Api(api).read_namespaced_config_map(f"{name}-ecr-pullthrough-dashboard", name)
        assert json.loads(dashboard.data["ecr-pullthrough.json"])["uid"] == "ecr-pullthrough"
        apps = client.AppsV1Api(api)
        webhook = apps.read_namespaced_deployment(f"{name}-ecr-pullthrough-webhook", name)
        assert webhook.spec.template.spec.topology_spread_constraints[0].max_skew == 2
        assert webhook.spec.strategy.rolling_update.max_unavailable == 0
        assert webhook.spec.revision_history_limit == 3

        # The configuration as stored, with only clientConfig pointed at a local webhook process.
        admission = client.AdmissionregistrationV1Api(api)
        configuration_name = f"{name}-ecr-pullthrough"
        with webhook_process(tmp_path, "--registry", REGISTRY) as process:
            stored = json.loads(
                admission.read_mutating_webhook_configuration(configuration_name, _preload_content=False).data
            )
            assert stored["metadata"]["labels"]["example.com/webhook"] == "mutating"
            stored["webhooks"][0]["clientConfig"] = {
                "url": f"{process.url}/mutate",
                "caBundle": base64.b64encode(process.ca.cert_pem).decode(),
            }
            admission.replace_mutating_webhook_configuration(configuration_name, stored)
            selected, other = f"{name}-in", f"{name}-out"
            control_plane.create_namespace(selected, labels={"ecr-pullthrough": "enabled"})
            control_plane.create_namespace(other)
            core = client.CoreV1Api(api)

            def stored_image(namespace: str, labels: dict[str, str] | None = None) -> str:
                pod = client.V1Pod(
                    metadata=client.V1ObjectMeta(generate_name="scope-", labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx:1.27")]),
                )
                return str(core.create_namespaced_pod(namespace, pod, dry_run="All").spec.containers[0].image)

            rewritten = f"{REGISTRY}/docker-hub/library/nginx:1.27"
            wait_for(lambda: stored_image(selected) == rewritten, what="the configuration to call the webhook")
            assert stored_image(other) == "nginx:1.27", "webhook.namespaceSelector"
            assert stored_image(selected, {"app": "legacy"}) == "nginx:1.27", "webhook.objectSelector"
            assert stored_image(selected, {"gpu": "a100"}) == "nginx:1.27", "webhook.matchConditions"
            assert stored_image(selected, {"app": "web"}) == rewritten


def test_an_existing_service_account_installs(
    control_plane: ControlPlane, helm: Path, release: tuple[str, tuple[str, ...]]
) -> None:
    name, kube = release
    with control_plane.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_service_account(name, client.V1ServiceAccount(metadata={"name": "made-by-terraform"}))
        existing = (
            "--set",
            "controller.serviceAccount.create=false",
            "--set",
            "controller.serviceAccount.name=made-by-terraform",
        )
        helm_run(helm, "install", name, str(CHART), *kube, "--set", f"registry={REGISTRY}", *existing)
        account = core.read_namespaced_service_account("made-by-terraform", name)
        assert "meta.helm.sh/release-name" not in (account.metadata.annotations or {}), "never taken over by Helm"
        token = control_plane.service_account_token(name, "made-by-terraform")
    with control_plane.api_client(token) as as_controller:
        review = client.AuthorizationV1Api(as_controller).create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {"verb": "get", "resource": "leases", "group": "coordination.k8s.io"}
                    | {"namespace": name, "name": f"{name}-ecr-pullthrough-controller"}
                }
            }
        )
        assert review.status.allowed, "the chart's Role is bound to the existing account"


@pytest.mark.parametrize("reuse", [False, True], ids=["values-again", "reuse-values"])
def test_upgrade_from_0_1_0_with_its_default_values(
    control_plane: ControlPlane, helm: Path, release: tuple[str, tuple[str, ...]], reuse: bool
) -> None:
    name, kube = release
    values = ("--set", f"registry={REGISTRY}", "--set", f"secretName={name}-pull")
    helm_run(helm, "install", name, str(CHART_0_1_0), *kube, *values)
    with control_plane.api_client() as api:
        apps = client.AppsV1Api(api)
        before = {d.metadata.name: d.spec.template.spec for d in apps.list_namespaced_deployment(name).items}
        again = ("--reuse-values",) if reuse else values
        upgraded = helm_run(helm, "upgrade", name, str(CHART), *kube, *again)
        if reuse:  # 0.1.0's default topologySpread: true is carried over, and NOTES says how to shed it
            [deprecated] = upgraded.stdout.split("DEPRECATED values in use:\n")[1:]
            assert deprecated.strip().startswith("- webhook.topologySpread is deprecated")
            assert "upgrade once with --reset-then-reuse-values" in deprecated
        else:
            assert "DEPRECATED" not in upgraded.stdout
        after = {d.metadata.name: d.spec.template.spec for d in apps.list_namespaced_deployment(name).items}
    assert set(after) == set(before)
    for deployment, spec in after.items():
        assert spec.service_account_name == before[deployment].service_account_name
        old = before[deployment].topology_spread_constraints or []
        assert {(c.topology_key, c.max_skew, c.when_unsatisfiable) for c in spec.topology_spread_constraints or []} == {
            (c.topology_key, c.max_skew, c.when_unsatisfiable) for c in old
        }


def test_upgrade_from_0_1_0_with_topology_spread_off_keeps_it_off_and_says_so(
    control_plane: ControlPlane, helm: Path, release: tuple[str, tuple[str, ...]]
) -> None:
    name, kube = release
    values = (
        "--set",
        f"registry={REGISTRY}",
        "--set",
        f"secretName={name}-pull",
        "--set",
        "webhook.topologySpread=false",
    )
    helm_run(helm, "install", name, str(CHART_0_1_0), *kube, *values)
    upgraded = helm_run(helm, "upgrade", name, str(CHART), *kube, "--reuse-values")
    assert "webhook.topologySpread is deprecated since chart 0.3.0" in upgraded.stdout
    with control_plane.api_client() as api:
        webhook = client.AppsV1Api(api).read_namespaced_deployment(f"{name}-ecr-pullthrough-webhook", name)
    assert not webhook.spec.template.spec.topology_spread_constraints


@pytest.mark.parametrize("length", [45, 46, 53])
def test_every_release_name_gives_every_object_its_own_name(helm: Path, length: int) -> None:
    """From 46 characters, 0.1.0 cut the whole `-controller`/`-webhook` suffix: both components had one name."""
    release = ("r" * length)[:length]
    objects = render(helm, release=release, namespace="n", set_values={"cleanupOnUninstall.enabled": "true"})
    keys = [(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    assert all(len(name) <= 63 for _, _, name in keys)
    accounts = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o["spec"]["template"]["spec"]["serviceAccountName"]
        for o in objects
        if o["kind"] == "Deployment"
    }
    assert accounts["controller"] != accounts["webhook"]
    if length >= 46:
        assert accounts["controller"].endswith("-controller")
        assert accounts["webhook"].endswith("-webhook")
    else:  # names that fitted keep theirs, even cut: no upgrade renames an object
        old = helm_run(helm, "template", release, str(CHART_0_1_0), "-n", "n", "--set", f"registry={REGISTRY}")
        # (`helm test` hooks are made afresh by each `helm test`: a new name renames nothing installed.)
        before = {
            (o["kind"], o["metadata"]["name"]) for o in installed([o for o in yaml.safe_load_all(old.stdout) if o])
        }
        assert before <= {(kind, name) for kind, _, name in keys}
