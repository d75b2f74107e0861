"""Whose pull Secret it is: two releases with one Secret name, and an upgrade from chart 0.1.0.

Each controller runs as its release's ServiceAccount, under the chart's RBAC
and admission policy, on the real API server. The pull Secret gets a name of
this module's own and only namespaces labelled for a test are served, so the
other modules' controllers and Secrets are never in the way.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.chart import CHART, REGISTRY, apply, render
from tests.e2e.controllers import ControllerProcess, controller_process, token_kubeconfig
from tests.e2e.controlplane import ControlPlane
from tests.fake_ecr import FakeEcr, fake_ecr
from tests.support import wait_for

CHART_0_1_0 = Path(__file__).resolve().parents[1] / "fixtures" / "chart-0.1.0"
EU_REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "ecr-pullthrough/instance"
SERVED = "ownership-e2e/served"  # namespaces without this label are excluded (`!label`)
QUICK = ("--token-refresh-floor-seconds", "1", "--resync-seconds", "1", "--api-qps", "1000", "--api-burst", "1000")


def chart_objects(helm: Path, release: str, secret_name: str) -> list[dict[str, Any]]:
    templates = ("templates/controller-rbac.yaml", "templates/controller-policy.yaml")
    return render(helm, release=release, namespace=release, show_only=templates, set_values={"secretName": secret_name})


def policy_enforced(core: Any, namespace: str, secret_name: str) -> bool:
    """The policy refuses this account an unlabelled pull Secret (dry run) once the API server has loaded it."""
    unlabelled = {"metadata": {"name": secret_name}, "type": "kubernetes.io/dockerconfigjson"}
    unlabelled["data"] = {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()}
    try:
        core.create_namespaced_secret(namespace, unlabelled, dry_run="All")
    except ApiException as error:
        return error.status == 403 and "ValidatingAdmissionPolicy" in str(error.body)
    return False


def account_kubeconfig(plane: ControlPlane, release: str, secret_name: str, folder: Path) -> Path:
    token = plane.service_account_token(release, f"{release}-ecr-pullthrough-controller")
    with plane.api_client(token) as api:
        core = client.CoreV1Api(api)
        wait_for(lambda: policy_enforced(core, release, secret_name), timeout=30, what="the chart's policy")
    return token_kubeconfig(plane, token, folder / f"{release}-kubeconfig")


def read_secret(core: client.CoreV1Api, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        return json.loads(core.read_namespaced_secret(name, namespace, _preload_content=False).data)  # type: ignore[no-any-return]
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def auths(secret: dict[str, Any] | None) -> dict[str, Any]:
    if secret is None:
        return {}
    return json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]  # type: ignore[no-any-return]


def events(core: client.CoreV1Api, namespace: str, reason: str) -> list[str]:
    return [e.message for e in core.list_namespaced_event(namespace).items if e.reason == reason]


def controller_args(release: str, registry: str, secret_name: str) -> tuple[str, ...]:
    return (
        "--registry", registry, "--namespace", release, "--lease-name", f"{release}-ecr-pullthrough-controller",
        "--instance", f"{release}.{release}", "--secret-name", secret_name,
        "--exclude-namespace-selector", f"!{SERVED}", *QUICK,
    )  # fmt: skip


def served_namespaces(plane: ControlPlane, prefix: str, count: int) -> list[str]:
    names = [f"{prefix}-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    for name in names:
        plane.create_namespace(name, labels={SERVED: "true"})
    return names


@pytest.fixture
def ecr() -> Iterator[FakeEcr]:
    with fake_ecr() as endpoint:
        yield endpoint


@pytest.fixture
def core(control_plane: ControlPlane) -> Iterator[client.CoreV1Api]:
    with control_plane.api_client() as api:
        yield client.CoreV1Api(api)


def test_a_second_release_with_the_same_secret_name_fails_loudly_and_never_writes(
    control_plane: ControlPlane, helm: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    """Two regions, two releases, one `secretName`: the first release keeps its Secrets; the second says why."""
    secret_name = f"pull-{uuid.uuid4().hex[:6]}"
    us, eu = f"own-us-{uuid.uuid4().hex[:4]}", f"own-eu-{uuid.uuid4().hex[:4]}"
    with control_plane.api_client() as admin:
        for release in (us, eu):
            control_plane.create_namespace(release)
            apply(admin, chart_objects(helm, release, secret_name), release)
    kubeconfigs = {r: account_kubeconfig(control_plane, r, secret_name, tmp_path) for r in (us, eu)}
    names = served_namespaces(control_plane, "two-releases", 3)

    def holds(registry: str) -> bool:
        return all(registry in auths(read_secret(core, secret_name, n)) for n in names)

    with controller_process(kubeconfigs[us], ecr, tmp_path, us, *controller_args(us, REGISTRY, secret_name)):
        wait_for(lambda: holds(REGISTRY), timeout=30, what="the first release's Secrets")
        before = {n: read_secret(core, secret_name, n) for n in names}
        assert all(s and s["metadata"]["labels"][INSTANCE_LABEL] == f"{us}.{us}" for s in before.values())

        second: ControllerProcess
        with controller_process(
            kubeconfigs[eu], ecr, tmp_path, eu, *controller_args(eu, EU_REGISTRY, secret_name)
        ) as second:

            def conflict_reason() -> str | None:
                # Listed among the problems of /readyz's body; readiness itself is the process's health.
                status, body = second.get("/readyz")
                return body if status == 200 and "another ecr-pullthrough installation" in body else None

            reason = wait_for(conflict_reason, timeout=30, what="the second release's /readyz to name the conflict")
            assert "give this release its own secretName" in reason
            for name in names:
                [message] = wait_for(
                    lambda name=name: events(core, name, "SecretOwnedByAnotherRelease"), what=f"the Event in {name}"
                )
                assert f"{INSTANCE_LABEL}={us}.{us}" in message
            # Several resyncs later (one a second), nothing has been written: no flapping.
            resyncs = second.metric("ecr_pullthrough_resyncs_total")
            wait_for(lambda: second.metric("ecr_pullthrough_resyncs_total") >= resyncs + 3, what="three resyncs")
            assert {n: read_secret(core, secret_name, n) for n in names} == before
            assert second.metric("ecr_pullthrough_secret_writes_total", result="other-instance") >= len(names)
            assert "denied request" not in second.log()


def helm_run(helm: Path, *args: str) -> None:
    subprocess.run([str(helm), *args], check=True, capture_output=True, text=True)


def legacy_secret(name: str, registry: str, password: str) -> dict[str, Any]:
    """A pull Secret exactly as chart 0.1.0's controller wrote it: managed-by, no instance label."""
    auth = base64.b64encode(f"AWS:{password}".encode()).decode()
    config = {"auths": {registry: {"username": "AWS", "password": password, "auth": auth}}}
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    return {
        "metadata": {
            "name": name,
            "labels": {MANAGED_BY: "ecr-pullthrough"},
            "annotations": {"ecr-pullthrough/token-expires-at": expires.isoformat()},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def test_helm_upgrade_from_0_1_0_adopts_the_existing_secrets(
    control_plane: ControlPlane, helm: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    """After `helm upgrade` from 0.1.0, the Secrets 0.1.0 wrote for our registry are ours and kept fresh;
    one another 0.1.0 installation wrote for another registry is left alone, and said so."""
    release = f"upgrade-{uuid.uuid4().hex[:4]}"
    secret_name = f"pull-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(release)
    kube = ("--namespace", release, "--kubeconfig", str(control_plane.kubeconfig_path))
    values = ("--set", f"registry={REGISTRY}", "--set", f"secretName={secret_name}")
    values += ("--set", f"excludeNamespaceSelector=!{SERVED}")
    helm_run(helm, "install", release, str(CHART_0_1_0), *kube, *values)
    try:
        ours = served_namespaces(control_plane, "upgrade-ours", 2)
        [theirs] = served_namespaces(control_plane, "upgrade-theirs", 1)
        for name in ours:
            core.create_namespaced_secret(name, legacy_secret(secret_name, REGISTRY, "from-0.1.0"))
        core.create_namespaced_secret(theirs, legacy_secret(secret_name, EU_REGISTRY, "other-region"))
        untouched = read_secret(core, secret_name, theirs)

        helm_run(helm, "upgrade", release, str(CHART), *kube, *values)
        manifest = render(
            helm, release=release, namespace=release, show_only=("templates/controller-deployment.yaml",),
            set_values={"secretName": secret_name, "excludeNamespaceSelector": f"!{SERVED}"},
        )  # fmt: skip
        [deployment] = [obj for obj in manifest if obj["kind"] == "Deployment"]
        # The controller as the upgraded chart runs it (its own flags for this release), locally.
        _, *chart_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        skipped = ("--http-", "--upstream-status", "--verify", "--resync", "--token-refresh")
        chart_args = [a for a in chart_args if not a.startswith(skipped)]
        kubeconfig = account_kubeconfig(control_plane, release, secret_name, tmp_path)
        environment = ("--registry", REGISTRY, "--secret-name", secret_name, *QUICK)
        with controller_process(kubeconfig, ecr, tmp_path, release, *chart_args, *environment) as running:

            def adopted(name: str) -> bool:
                found = read_secret(core, secret_name, name)
                return bool(
                    found
                    and auths(found)[REGISTRY]["password"].startswith("fake-ecr-password-")
                    and found["metadata"]["labels"].get(INSTANCE_LABEL) == f"{release}.{release}"
                )

            for name in ours:
                wait_for(lambda name=name: adopted(name), timeout=30, what=f"the 0.1.0 Secret in {name} adopted")
            [message] = wait_for(lambda: events(core, theirs, "SecretOwnedByAnotherRelease"), what="the Event")
            assert f"0.1.0 installation (no {INSTANCE_LABEL} label) for {EU_REGISTRY}" in message
            assert read_secret(core, secret_name, theirs) == untouched
            assert "denied request" not in running.log()
    finally:
        helm_run(helm, "uninstall", release, *kube)
