"""`ecr-pullthrough doctor` against the real API server: each cluster check healthy, then broken.

One installation for the module: the real controller (fake ECR behind it), the real webhook
registered with the chart's configuration, its TLS Secret and caBundle. The API server is shared
with other tests, so this installation serves only namespaces carrying a label of its own
(`--exclude-namespace-selector !<label>`, for the controller and for doctor alike).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.chart import REGISTRY
from tests.e2e.controllers import ControllerProcess, controller_process, status_file_sync, token_kubeconfig
from tests.e2e.controlplane import ControlPlane
from tests.e2e.fixtures_webhook import TARGET_LABEL, registered, restricted_to
from tests.e2e.webhookconfig import mutating_webhook_configuration
from tests.fake_ecr import FakeEcr, fake_ecr
from tests.support import WebhookProcess, wait_for, webhook_process
from webhook import certs

HUB = "upstream docker.io (prefix docker-hub)"
ARN = "arn:aws:sts::123456789012:assumed-role/ecr-pullthrough/irsa"  # the fake STS's principal


@dataclass
class Installation:
    plane: ControlPlane
    folder: Path
    ecr: FakeEcr
    suffix: str
    label: str
    release: str  # the release namespace
    tenants: list[str]
    webhook: WebhookProcess
    configuration: dict[str, Any]
    stack: ExitStack = field(default_factory=ExitStack)
    controller: ControllerProcess | None = None
    starts: int = 0

    @property
    def secret(self) -> str:
        return f"doctor-pull-{self.suffix}"

    @property
    def status(self) -> str:
        return f"doctor-status-{self.suffix}"

    @property
    def tls_secret(self) -> str:
        return f"doctor-tls-{self.suffix}"

    def start_controller(self) -> None:
        self.starts += 1
        args = (
            "--registry", REGISTRY, "--namespace", self.release, "--secret-name", self.secret,
            "--instance", f"doctor-{self.suffix}", "--lease-name", f"doctor-{self.suffix}",
            "--upstream-status-configmap", self.status, "--exclude-namespace-selector", f"!{self.label}",
            "--token-refresh-floor-seconds", "1",
        )  # fmt: skip
        self.stack = ExitStack()
        self.controller = self.stack.enter_context(
            controller_process(self.plane.kubeconfig_path, self.ecr, self.folder, f"doctor-{self.starts}", *args)
        )

    def restart_controller(self) -> None:
        self.stack.close()
        self.start_controller()

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{self.suffix}"
        self.plane.create_namespace(name, labels={self.label: "yes", TARGET_LABEL: self.suffix})
        return name

    def doctor(self, *args: str, kubeconfig: Path | None = None, env: dict[str, str] | None = None) -> Doctor:
        command = [sys.executable, "-m", "webhook", "doctor", "--registry", REGISTRY, "--output", "json"]
        command += ["--kubeconfig", str(kubeconfig or self.plane.kubeconfig_path), "--namespace", self.release]
        command += ["--secret-name", self.secret, "--upstream-status-configmap", self.status]
        command += ["--webhook-configuration", self.configuration["metadata"]["name"]]
        command += ["--webhook-tls-secret", self.tls_secret, "--exclude-namespace-selector", f"!{self.label}"]
        command += ["--dry-run-namespace", self.tenants[0], *args]
        environment = {k: v for k, v in _environ().items() if not k.startswith(("AWS_", "ECR_PULLTHROUGH_"))}
        environment.update(self.ecr.environment() if env is None else env)
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=environment)
        try:
            found = json.loads(done.stdout)
        except ValueError:
            raise AssertionError(f"doctor printed no JSON ({done.returncode}):\n{done.stdout}\n{done.stderr}") from None
        return Doctor(done.returncode, {r["name"]: r for r in found["results"]}, done.stdout)


def _environ() -> dict[str, str]:
    return dict(os.environ)


@dataclass
class Doctor:
    code: int
    results: dict[str, dict[str, Any]]
    output: str

    def line(self, name: str) -> dict[str, Any]:
        assert name in self.results, f"no line {name!r} in:\n{self.output}"
        return self.results[name]

    def status(self, name: str) -> str:
        return str(self.line(name)["status"])


@pytest.fixture(scope="module")
def installation(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    folder = tmp_path_factory.mktemp("doctor")
    suffix = uuid.uuid4().hex[:6]
    label = f"doctor-{suffix}.e2e.ecr-pullthrough.io/served"
    release = f"doctor-release-{suffix}"
    control_plane.create_namespace(release, labels={label: "yes"})
    with ExitStack() as stack:
        ecr = stack.enter_context(fake_ecr())
        status_path = folder / "status.json"
        webhook = stack.enter_context(
            webhook_process(
                folder,
                "--registry",
                REGISTRY,
                "--secret-name",
                f"doctor-pull-{suffix}",
                "--upstream-status-file",
                str(status_path),
            )
        )
        configuration = restricted_to(
            mutating_webhook_configuration(
                url=f"{webhook.url}/mutate",
                ca_pem=webhook.ca.cert_pem,
                name=f"doctor-{suffix}",
                release_namespace=release,
            ),
            TARGET_LABEL,
            suffix,
        )
        found = Installation(control_plane, folder, ecr, suffix, label, release, [], webhook, configuration)
        with control_plane.api_client() as api:
            tls = {"tls.crt": webhook.cert_path.read_bytes(), "ca.crt": webhook.ca.cert_pem}
            client.CoreV1Api(api).create_namespaced_secret(
                release,
                {
                    "metadata": {"name": found.tls_secret},
                    "type": "Opaque",
                    "data": {key: base64.b64encode(value).decode() for key, value in tls.items()},
                },
            )
        found.tenants = [found.namespace("doctor-a"), found.namespace("doctor-b")]
        stack.enter_context(registered(control_plane, configuration))
        found.start_controller()
        stack.callback(lambda: found.stack.close())
        stack.enter_context(status_file_sync(control_plane, status_path, release, found.status))
        yield found


def healthy(installation: Installation) -> Doctor:
    """Doctor once everything has settled: the controller verified and wrote, the webhook called."""

    def settled() -> Doctor | None:
        doctor = installation.doctor()
        return doctor if doctor.code == 0 else None

    return wait_for(settled, timeout=60, interval=0.5, what="doctor to pass on a healthy installation")


def test_every_check_passes_on_a_healthy_installation(installation: Installation) -> None:
    doctor = healthy(installation)
    for name, line in doctor.results.items():
        if name != "controller's Warning Events (last hour)":  # other tests' controllers share this API server
            assert line["status"] == "pass", doctor.output
    assert doctor.status(f"AWS identity as {ARN}") == "pass"
    assert doctor.status(f"rule docker-hub for docker.io as {ARN}") == "pass"
    assert "verified by the controller" in doctor.line(HUB)["message"]
    assert doctor.line("ECR token")["message"].startswith("expires at ")
    assert "in all 3 namespaces it serves" in doctor.line(f"pull Secret {installation.secret}")["message"]
    rewritten = f"{REGISTRY}/docker-hub/library/hello-world:latest"
    assert doctor.line("webhook answers")["message"] == (
        f"a dry-run pod in {installation.tenants[0]} came back rewritten: hello-world:latest -> {rewritten}"
    )
    assert (
        "signed by the caBundle"
        in doctor.line(f"webhook configuration {installation.configuration['metadata']['name']}")["message"]
    )


def test_text_output_is_a_checklist_with_fixes(installation: Installation) -> None:
    healthy(installation)
    installation.ecr.rules.pop("github", None)
    command = [sys.executable, "-m", "webhook", "doctor", "--registry", REGISTRY, "--check", "aws"]
    command += ["--upstreams", "ghcr.io=github"]
    environment = {k: v for k, v in _environ().items() if not k.startswith(("AWS_", "ECR_PULLTHROUGH_"))}
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment | installation.ecr.environment(),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    failing = [i for i, line in enumerate(lines) if line.startswith("FAIL  rule github for ghcr.io as arn:")]
    assert failing, done.stdout
    assert "no pull-through cache rule for ghcr.io" in lines[failing[0]]
    assert lines[failing[0] + 1].startswith("      fix: ")
    assert lines[-1] == "2 passed, 0 warnings, 1 failed"


def test_an_upstream_the_controller_cannot_verify_fails_its_line_and_the_dry_run(installation: Installation) -> None:
    healthy(installation)
    rule = installation.ecr.rules.pop("docker-hub")
    try:
        installation.restart_controller()  # it verifies at start
        doctor = wait_for(
            lambda: (d := installation.doctor()).status(HUB) == "fail" and d,
            timeout=30,
            interval=0.5,
            what="the controller to publish docker.io unverified",
        )
        assert doctor.code == 1
        reason = "no pull-through cache rule for registry-1.docker.io"
        assert reason in doctor.line(HUB)["message"]
        answers = doctor.line("webhook answers")
        assert answers["status"] == "fail"
        assert answers["message"].startswith(f"the webhook leaves hello-world:latest alone: {reason}")
        assert doctor.status(f"rule docker-hub for docker.io as {ARN}") == "fail"
    finally:
        installation.ecr.rules["docker-hub"] = rule
        installation.restart_controller()
    healthy(installation)


def test_a_caBundle_that_does_not_sign_the_serving_certificate_fails_and_the_webhook_is_not_reached(
    installation: Installation,
) -> None:
    healthy(installation)
    name = installation.configuration["metadata"]["name"]
    with installation.plane.api_client() as api:
        admission = client.AdmissionregistrationV1Api(api)

        def set_bundle(pem: bytes) -> None:
            live = json.loads(admission.read_mutating_webhook_configuration(name, _preload_content=False).data)
            for hook in live["webhooks"]:
                hook["clientConfig"]["caBundle"] = base64.b64encode(pem).decode()
            admission.replace_mutating_webhook_configuration(name, live)

        set_bundle(certs.make_ca("someone-else").cert_pem)
        try:
            doctor = wait_for(
                lambda: (d := installation.doctor()).status("webhook answers") == "fail" and d,
                timeout=30,
                interval=0.5,
                what="the API server to use the wrong caBundle",
            )
            assert doctor.code == 1
            assert "does not sign the serving certificate" in doctor.line(f"webhook configuration {name}")["message"]
            assert doctor.status(f"webhook configuration {name}") == "fail"
            assert doctor.line("webhook answers")["message"] == (
                f"a dry-run pod in {installation.tenants[0]} came back unchanged (hello-world:latest)"
            )
            assert "failurePolicy Ignore" in doctor.line("webhook answers")["fix"]
        finally:
            set_bundle(installation.webhook.ca.cert_pem)
    healthy(installation)


def test_a_namespace_without_our_pull_secret_is_counted_and_named(installation: Installation) -> None:
    healthy(installation)
    foreign = f"doctor-foreign-{installation.suffix}"
    # A Secret of that name that is not ours, there before the namespace is served: the controller leaves it.
    installation.plane.create_namespace(foreign)
    with installation.plane.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_secret(foreign, {"metadata": {"name": installation.secret}, "stringData": {"x": "y"}})
        core.patch_namespace(foreign, {"metadata": {"labels": {installation.label: "yes"}}})
    try:
        doctor = installation.doctor("--check", "pull-secrets")
    finally:
        with installation.plane.api_client() as api:
            client.CoreV1Api(api).patch_namespace(foreign, {"metadata": {"labels": {installation.label: None}}})
    assert doctor.code == 1
    line = doctor.line(f"pull Secret {installation.secret}")
    assert line["status"] == "fail"
    assert line["message"] == (
        f"1 of 4 namespaces: not ours (no managed-by label: someone else's Secret of that name) in 1: {foreign}"
    )
    assert "secretName" in line["fix"]


def test_a_token_that_cannot_be_renewed_fails_once_it_expires(installation: Installation) -> None:
    healthy(installation)
    # A new leader adopts the token of its own namespace's Secret: without that Secret it fetches one,
    # here of 3 seconds, which it may then not renew. The tenants' Secrets keep their newer tokens.
    installation.stack.close()
    with installation.plane.api_client() as api:
        client.CoreV1Api(api).delete_namespaced_secret(installation.secret, installation.release)
    installation.ecr.lifetime_seconds = 3
    issued = installation.ecr.tokens_issued
    try:
        installation.start_controller()
        wait_for(lambda: installation.ecr.tokens_issued > issued, timeout=30, what="a token of 3 seconds")
        installation.ecr.token_denied = True
        doctor = wait_for(
            lambda: (
                (d := installation.doctor("--check", "controller,pull-secrets")).status("ECR token") == "fail" and d
            ),
            timeout=30,
            interval=0.5,
            what="the token to expire",
        )
        assert doctor.code == 1
        assert doctor.line("ECR token")["message"].startswith("expired at ")
        assert "cannot renew" in doctor.line("ECR token")["fix"]
        pulls = doctor.line(f"pull Secret {installation.secret}")
        assert pulls["status"] == "fail"
        assert pulls["message"] == f"1 of 3 namespaces: expired in 1: {installation.release}"
    finally:
        installation.ecr.token_denied = False
        installation.ecr.lifetime_seconds = 12 * 3600
        installation.restart_controller()
    healthy(installation)


def test_a_stale_upstream_status_fails(installation: Installation) -> None:
    healthy(installation)
    doctor = wait_for(
        lambda: (
            (d := installation.doctor("--check", "upstream-status", "--upstream-status-max-age-seconds", "0.5")).status(
                "upstream status"
            )
            == "fail"
            and d
        ),
        timeout=30,
        interval=0.5,
        what="the status to be older than 0.5 s",
    )
    assert doctor.code == 1
    assert doctor.line("upstream status")["message"].startswith("stale: published ")
    assert "not running or not leading" in doctor.line("upstream status")["fix"]


def test_a_missing_permission_is_named(installation: Installation, tmp_path: Path) -> None:
    healthy(installation)
    namespace = installation.tenants[1]
    with installation.plane.api_client() as api:
        client.CoreV1Api(api).create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = installation.plane.service_account_token(namespace, "nobody")
    kubeconfig = token_kubeconfig(installation.plane, token, tmp_path / "kubeconfig")
    doctor = installation.doctor("--check", "webhook,upstream-status,pull-secrets", kubeconfig=kubeconfig)
    assert doctor.code == 1
    assert doctor.line("upstream status")["message"] == (
        f"cannot get configmaps in namespace {installation.release} (RBAC): not checked"
    )
    assert doctor.line(f"pull Secret {installation.secret}")["fix"] == "grant `list namespaces` to whoever runs this"
    assert doctor.line("webhook answers")["message"].startswith("cannot get configmaps")


def test_without_aws_credentials_the_aws_side_is_a_warning(installation: Installation) -> None:
    environment = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL_STS": installation.ecr.url}
    doctor = installation.doctor("--check", "aws", env=environment)
    assert doctor.code == 0
    assert doctor.status("AWS identity") == "warn"
    assert doctor.line("AWS identity")["message"].startswith("no AWS credentials here")


def test_the_controllers_metrics_when_reachable(installation: Installation) -> None:
    healthy(installation)
    assert installation.controller is not None
    url = f"http://127.0.0.1:{installation.controller.port}"
    doctor = wait_for(
        lambda: (d := installation.doctor("--check", "controller", "--controller-url", url)).code == 0 and d,
        timeout=30,
        interval=0.5,
        what="the leader's metrics",
    )
    assert doctor.line("ECR token (metrics)")["message"].startswith("the leader's token expires in 11h")
    assert doctor.line("namespaces (metrics)")["message"] == "3 of 3 namespaces in sync"
    stopped = installation.doctor("--check", "controller", "--controller-url", "http://127.0.0.1:9")
    assert stopped.status("controller's metrics") == "fail"
