"""caBundle has one owner: the controller (certificates.mode controller), which repairs any drift within seconds.

Chart 0.1.0 rendered caBundle from a `lookup` of the TLS Secret: `helm rollback` restored an
old CA, and the first upgrade to a chart without the field blanks it. Here, on the real API
server and from the checked-in chart 0.1.0: an upgrade from 0.1.0, a deleted TLS Secret and a
rollback, each repaired by the running controller within seconds (its periodic check is left at
an hour), and each followed by a pod rewritten through a webhook that serves a certificate of the
controller's CA and is trusted through the live caBundle.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.chart import CHART, REGISTRY, render
from tests.e2e.controllers import controller_process, token_kubeconfig
from tests.e2e.controlplane import ControlPlane
from tests.e2e.fixtures_webhook import TARGET_LABEL, registered, restricted_to, wait_until_admitted
from tests.fake_ecr import fake_ecr
from tests.support import wait_for, webhook_process
from webhook import certs
from webhook.controller.webhookcerts import Material, plan

CHART_0_1_0 = Path(__file__).resolve().parents[1] / "fixtures" / "chart-0.1.0"
REPAIRED_WITHIN = 15.0  # seconds; the controller's periodic check runs once an hour here
REWRITTEN = f"{REGISTRY}/docker-hub/library/nginx:1.27"


def helm_run(binary: Path, *args: str) -> None:
    subprocess.run([str(binary), *args], check=True, capture_output=True, text=True)


class Release:
    def __init__(self, plane: ControlPlane, api: client.ApiClient, name: str) -> None:
        self.plane, self.name = plane, name
        self.core, self.admission = client.CoreV1Api(api), client.AdmissionregistrationV1Api(api)
        self.configuration = f"{name}-ecr-pullthrough"
        self.webhook = f"{self.configuration}-webhook"
        self.tls_secret = f"{self.webhook}-tls"

    def live(self) -> dict[str, Any]:
        answer = self.admission.read_mutating_webhook_configuration(self.configuration, _preload_content=False)
        return json.loads(answer.data)  # type: ignore[no-any-return]

    def bundles(self) -> set[str]:
        return {(w.get("clientConfig") or {}).get("caBundle", "") for w in self.live()["webhooks"]}

    def secret(self) -> dict[str, Any] | None:
        try:
            answer = self.core.read_namespaced_secret(self.tls_secret, self.name, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return json.loads(answer.data)  # type: ignore[no-any-return]

    def repaired(self) -> str | None:
        """The CA (PEM) once every webhook's caBundle trusts the CA of the current TLS Secret."""
        secret = self.secret()
        if secret is None:
            return None
        ca = base64.b64decode(secret["data"]["ca.crt"])
        bundles = self.bundles()
        trusted = "" not in bundles and all(ca in base64.b64decode(bundle) for bundle in bundles)
        return ca.decode() if trusted else None


def authority(secret: dict[str, Any]) -> certs.KeyPair:
    cert_pem, key_pem = (base64.b64decode(secret["data"][k]) for k in ("ca.crt", "ca.key"))
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return certs.KeyPair(cert_pem, key_pem, key, x509.load_pem_x509_certificate(cert_pem))


def a_pod_is_rewritten(release: Release, folder: Path, namespace: str) -> None:
    """A webhook serving a certificate of the controller's CA, trusted only through the live caBundle.

    `namespace` is excluded from the chart's own configuration (whose Service does not exist here),
    so that the API server calls only the probe's URL.
    """
    secret = release.secret()
    assert secret is not None
    folder.mkdir()
    with webhook_process(folder, "--registry", REGISTRY, ca=authority(secret)) as process:
        probe = copy.deepcopy(release.live())
        target = uuid.uuid4().hex[:8]
        probe["metadata"] = {"name": f"ca-bundle-probe-{target}"}
        for hook in probe["webhooks"]:
            hook["clientConfig"] = {"url": f"{process.url}/mutate", "caBundle": hook["clientConfig"]["caBundle"]}
            hook["namespaceSelector"] = {}
        with registered(release.plane, restricted_to(probe, TARGET_LABEL, target)):
            release.plane.create_namespace(namespace, labels={TARGET_LABEL: target})
            wait_until_admitted(
                release.plane,
                namespace,
                lambda pod: pod["spec"]["containers"][0]["image"] == REWRITTEN,
                what="a pod rewritten through the live caBundle",
            )


def test_upgrade_from_0_1_0_deleted_tls_secret_and_rollback_are_repaired_within_seconds(
    control_plane: ControlPlane, helm: Path, tmp_path: Path
) -> None:
    name = f"cab-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(name)
    kube = ("--namespace", name, "--kubeconfig", str(control_plane.kubeconfig_path))
    probes = [f"{name}-probe-{i}" for i in range(3)]  # excluded from the chart's configuration
    # Pull Secrets of this release's own name, and in none of the shared API server's namespaces
    # (no namespace carries the label): other modules' controllers must never meet them.
    secret_name = f"{name}-pull"
    own = {"secretName": secret_name, "excludeNamespaceSelector": "!ca-bundle-e2e/served"}
    values = (
        "--set",
        f"registry={REGISTRY}",
        "--set",
        "excludeNamespaces={" + ",".join(["kube-system", *probes]) + "}",
        *(f"--set={key}={value}" for key, value in own.items()),
    )
    with control_plane.api_client() as api:
        release = Release(control_plane, api, name)
        # Chart 0.1.0, with the TLS Secret and caBundle as its controller made them, and one more
        # upgrade of 0.1.0: its `lookup` then renders that caBundle into the release's manifest.
        helm_run(helm, "install", name, str(CHART_0_1_0), *kube, *values)
        owner = release.live()["metadata"]
        material = plan(Material({}), (f"{release.webhook}.{name}.svc",), datetime.datetime.now(datetime.UTC))
        assert material is not None
        release.core.create_namespaced_secret(name, {
            "metadata": {"name": release.tls_secret, "labels": {"app.kubernetes.io/managed-by": "ecr-pullthrough"},
                         "ownerReferences": [{"apiVersion": "admissionregistration.k8s.io/v1",
                                              "kind": "MutatingWebhookConfiguration",
                                              "name": owner["name"], "uid": owner["uid"]}]},
            "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v).decode() for k, v in material.files.items()},
        })  # fmt: skip
        first_ca = base64.b64encode(material.files["ca.crt"]).decode()
        configuration = release.live()
        for hook in configuration["webhooks"]:
            hook["clientConfig"]["caBundle"] = first_ca
        release.admission.replace_mutating_webhook_configuration(release.configuration, configuration)
        helm_run(helm, "upgrade", name, str(CHART_0_1_0), *kube, *values)  # revision 2: caBundle in the manifest
        assert release.bundles() == {first_ca}

        # 1. The upgrade to this chart drops caBundle from the manifest, and so blanks the live field.
        helm_run(helm, "upgrade", name, str(CHART), *kube, *values)  # revision 3
        # (With this chart the live field is now blank: the three-way merge removed what the old manifest
        # named and the new one does not. Chart 0.1.0's lookup kept it here, but blanked it whenever the
        # Secret was absent.) Either way, the controller starts after the upgrade, as its pods roll.
        only = ("templates/controller-deployment.yaml",)
        excluded = {"excludeNamespaces": "{" + ",".join(["kube-system", *probes]) + "}", **own}
        rendered = render(helm, release=name, namespace=name, show_only=only, set_values=excluded)
        [deployment] = [obj for obj in rendered if obj["kind"] == "Deployment"]
        _, *args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        args = [a for a in args if not a.startswith(("--http-", "--upstream-status", "--verify"))]
        args += ["--registry", REGISTRY, "--secret-name", secret_name, "--certificate-check-seconds", "3600"]
        token = control_plane.service_account_token(name, f"{name}-ecr-pullthrough-controller")
        kubeconfig = token_kubeconfig(control_plane, token, tmp_path / "kubeconfig")
        with (
            fake_ecr() as ecr,
            controller_process(kubeconfig, ecr, tmp_path, name, *args) as running,
        ):
            ca = wait_for(release.repaired, timeout=REPAIRED_WITHIN, what="caBundle after the upgrade from 0.1.0")
            assert base64.b64encode(ca.encode()).decode() == first_ca, "the CA is kept"
            a_pod_is_rewritten(release, tmp_path / "after-upgrade", probes[0])

            # 2. The TLS Secret deleted (the chart README's way to get a new CA): a new one, trusted, at once.
            release.core.delete_namespaced_secret(release.tls_secret, name)
            second_ca = wait_for(
                lambda: (found := release.repaired()) and found != ca and found,
                timeout=REPAIRED_WITHIN,
                what="a new CA and its caBundle after the TLS Secret was deleted",
            )
            a_pod_is_rewritten(release, tmp_path / "after-delete", probes[1])

            # 3. A rollback to revision 2 (0.1.0) restores the first CA in the manifest: repaired again.
            helm_run(helm, "rollback", name, "2", *kube)
            wait_for(
                lambda: release.repaired() == second_ca and len(release.bundles()) == 1,
                timeout=REPAIRED_WITHIN,
                what="caBundle after the rollback",
            )
            a_pod_is_rewritten(release, tmp_path / "after-rollback", probes[2])
            assert "Forbidden" not in running.log()
        helm_run(helm, "uninstall", name, *kube)
