"""The controller against the real API server, as the chart's ServiceAccount, with a fake ECR endpoint."""

from __future__ import annotations

import base64
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.chart import REGISTRY, apply, render
from tests.e2e.controllers import ControllerProcess, controller_process, token_kubeconfig
from tests.e2e.controlplane import ControlPlane
from tests.fake_ecr import FakeEcr, fake_ecr
from tests.fake_imds import ACCESS_KEY as IMDS_ACCESS_KEY
from tests.fake_imds import ROLE as IMDS_ROLE
from tests.fake_imds import FakeImds, fake_imds
from tests.support import wait_for

RELEASE_NAMESPACE = "ecr-pullthrough"
SERVICE_ACCOUNT = "ecr-pullthrough-controller"  # the chart's name for release "ecr-pullthrough"
SECRET = "ecr-pullthrough"
INSTANCE = f"{RELEASE_NAMESPACE}.ecr-pullthrough"  # the chart's name for release ecr-pullthrough in its namespace
OURS = {"app.kubernetes.io/managed-by": "ecr-pullthrough", "ecr-pullthrough/instance": INSTANCE}
CONTROLLER_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{SERVICE_ACCOUNT}"
FAST = (
    "--registry", REGISTRY,
    "--namespace", RELEASE_NAMESPACE,
    "--lease-name", SERVICE_ACCOUNT,
    "--instance", INSTANCE,
    "--lease-seconds", "4",
    "--renew-deadline-seconds", "3",
    "--retry-seconds", "0.5",
    "--token-refresh-floor-seconds", "1",
)  # fmt: skip


# For tests about something else than pacing: the other tests' namespaces get their secrets at once.
NO_WRITE_LIMIT = ("--api-qps", "1000", "--api-burst", "1000")


@pytest.fixture(scope="module")
def kubeconfig(control_plane: ControlPlane, helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart's ServiceAccount and RBAC, applied; a kubeconfig holding only that account's token."""
    try:
        control_plane.create_namespace(RELEASE_NAMESPACE)
    except ApiException as error:
        if error.status != 409:  # another module of controller tests made it already
            raise
    with control_plane.api_client() as api:
        templates = ("templates/controller-rbac.yaml", "templates/controller-policy.yaml")
        apply(api, render(helm, show_only=templates), RELEASE_NAMESPACE)
    token = control_plane.service_account_token(RELEASE_NAMESPACE, SERVICE_ACCOUNT)
    with control_plane.api_client(token) as api:
        # The policy is enforced some time after its creation; every test here runs under it.
        wait_for(lambda: policy_refuses(client.CoreV1Api(api)), timeout=30, what="the chart's policy to be enforced")
    return token_kubeconfig(control_plane, token, tmp_path_factory.mktemp("controller") / "kubeconfig")


def policy_refuses(core: client.CoreV1Api) -> bool:
    """True once the chart's policy refuses the controller's account a Secret it never writes (dry run)."""
    foreign = client.V1Secret(metadata=client.V1ObjectMeta(name="not-ours"), type="Opaque")
    try:
        core.create_namespaced_secret(RELEASE_NAMESPACE, foreign, dry_run="All")
    except ApiException as error:
        return error.status == 403 and "ValidatingAdmissionPolicy" in str(error.body)
    return False


@pytest.fixture
def core(control_plane: ControlPlane) -> Iterator[client.CoreV1Api]:
    with control_plane.api_client() as api:
        yield client.CoreV1Api(api)


@pytest.fixture(autouse=True)
def no_adoptable_token(control_plane: ControlPlane, kubeconfig: Path) -> None:
    """Each test's controller starts as if none had run: a new leader adopts the token it finds in the
    pull Secret of its own namespace, and an earlier test's token would otherwise be adopted."""
    forget_adoptable_token(control_plane)


def forget_adoptable_token(control_plane: ControlPlane) -> None:
    with control_plane.api_client() as api:
        try:
            client.CoreV1Api(api).delete_namespaced_secret(SECRET, RELEASE_NAMESPACE)
        except ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def ecr() -> Iterator[FakeEcr]:
    with fake_ecr() as endpoint:
        yield endpoint


def namespaces(control_plane: ControlPlane, prefix: str, count: int) -> list[str]:
    suffix = uuid.uuid4().hex[:6]
    names = [f"{prefix}-{i}-{suffix}" for i in range(count)]
    for name in names:
        control_plane.create_namespace(name)
    return names


def secret(core: client.CoreV1Api, namespace: str) -> dict[str, Any] | None:
    try:
        return json.loads(core.read_namespaced_secret(SECRET, namespace, _preload_content=False).data)  # type: ignore[no-any-return]
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def password_in(found: dict[str, Any] | None) -> str | None:
    if found is None or found.get("type") != "kubernetes.io/dockerconfigjson":
        return None
    config = json.loads(base64.b64decode(found["data"][".dockerconfigjson"]))
    return config["auths"][REGISTRY]["password"]  # type: ignore[no-any-return]


def all_hold(core: client.CoreV1Api, names: list[str], password: str) -> bool:
    return all(password_in(secret(core, name)) == password for name in names)


def secret_writes(control_plane: ControlPlane, names: set[str] | None = None) -> int:
    """Secret creates and updates by the controller's account, from the API server's audit log."""
    count = 0
    for line in control_plane.audit_log.read_text().splitlines():
        event = json.loads(line)
        reference = event.get("objectRef") or {}
        if (
            event.get("stage") == "ResponseComplete"
            and event.get("user", {}).get("username") == CONTROLLER_USER
            and reference.get("resource") == "secrets"
            and event.get("verb") in ("create", "update", "patch")
            and (names is None or reference.get("namespace") in names)
        ):
            count += 1
    return count


def leader(running: ControllerProcess) -> bool:
    return running.metric("ecr_pullthrough_leader") == 1


def no_token_logged(running: ControllerProcess, ecr: FakeEcr) -> None:
    """Neither a password nor its `auth` form (base64 of `AWS:<password>`, as ECR hands it out) is in the log."""
    log = running.log()
    for n in range(1, ecr.tokens_issued + 1):
        assert ecr.password(n) not in log
        assert base64.b64encode(f"AWS:{ecr.password(n)}".encode()).decode() not in log


def test_every_namespace_gets_a_correct_secret_and_a_new_one_within_a_second_or_so(
    control_plane: ControlPlane,
    kubeconfig: Path,
    core: client.CoreV1Api,
    ecr: FakeEcr,
    tmp_path: Path,
) -> None:
    names = namespaces(control_plane, "bulk", 200)
    with controller_process(kubeconfig, ecr, tmp_path, "a", *FAST) as running:
        # Timings are `make bench`'s job; here only generous deadlines.
        wait_for(lambda: all_hold(core, names, ecr.password(1)), timeout=90, interval=0.5, what="200 secrets")

        found = secret(core, names[0])
        assert found is not None
        assert OURS.items() <= found["metadata"]["labels"].items()
        assert "ecr-pullthrough/token-expires-at" in found["metadata"]["annotations"]
        auth = json.loads(base64.b64decode(found["data"][".dockerconfigjson"]))["auths"][REGISTRY]
        assert auth["username"] == "AWS"
        assert base64.b64decode(auth["auth"]).decode() == f"AWS:{ecr.password(1)}"

        [fresh] = namespaces(control_plane, "fresh", 1)
        wait_for(
            lambda: password_in(secret(core, fresh)) == ecr.password(1), timeout=10, what="a new namespace's secret"
        )
        assert running.get("/readyz")[0] == 200
        assert running.metric("ecr_pullthrough_namespaces_in_sync") >= 201
        no_token_logged(running, ecr)


def test_a_deleted_or_edited_secret_is_restored_and_a_foreign_one_left_alone(
    control_plane: ControlPlane, kubeconfig: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    ours, foreign = namespaces(control_plane, "restore", 2)
    core.create_namespaced_secret(
        foreign,
        client.V1Secret(metadata=client.V1ObjectMeta(name=SECRET), string_data={"note": "a user's own secret"}),
    )
    foreign_before = secret(core, foreign)
    assert foreign_before is not None
    with controller_process(kubeconfig, ecr, tmp_path, "a", *FAST) as running:
        password = ecr.password(1)
        wait_for(lambda: password_in(secret(core, ours)) == password, what="the secret")

        core.delete_namespaced_secret(SECRET, ours)
        wait_for(lambda: password_in(secret(core, ours)) == password, what="the deleted secret to come back")

        edited = secret(core, ours)
        assert edited is not None
        edited["data"][".dockerconfigjson"] = base64.b64encode(b'{"auths": {}}').decode()
        core.replace_namespaced_secret(SECRET, ours, edited)
        wait_for(lambda: password_in(secret(core, ours)) == password, what="the edited secret to be restored")

        wait_for(lambda: running.metric("ecr_pullthrough_secret_writes_total", result="foreign") >= 1, what="foreign")

        def reported() -> bool:
            events = core.list_namespaced_event(foreign).items
            return any(event.reason == "ForeignSecret" for event in events)

        wait_for(reported, what="a ForeignSecret event")
        foreign_after = secret(core, foreign)
        assert foreign_after is not None
        assert foreign_after["metadata"]["resourceVersion"] == foreign_before["metadata"]["resourceVersion"]
        assert foreign_after["data"] == foreign_before["data"]
        no_token_logged(running, ecr)


def test_a_refresh_replaces_every_token_and_an_unchanged_resync_writes_nothing(
    control_plane: ControlPlane, kubeconfig: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    names = namespaces(control_plane, "refresh", 5)
    ecr.lifetime_seconds = 4  # refreshed at half-life: every 2 s
    with controller_process(kubeconfig, ecr, tmp_path, "a", *FAST, "--resync-seconds", "1") as running:
        wait_for(lambda: all_hold(core, names, ecr.password(1)), what="the first token everywhere")
        wait_for(lambda: ecr.tokens_issued >= 3, timeout=20, what="two refreshes")
        ecr.lifetime_seconds = 12 * 3600
        short_lived = ecr.tokens_issued  # every token after these lives long
        settled = wait_for(
            lambda: (
                ecr.tokens_issued
                if ecr.tokens_issued > short_lived and all_hold(core, names, ecr.password(ecr.tokens_issued))
                else None
            ),
            timeout=30,
            what="a long-lived token everywhere",
        )
        # Other tests' namespaces may still be catching up; count writes in ours only.
        writes = secret_writes(control_plane, set(names))
        resyncs = running.metric("ecr_pullthrough_resyncs_total")
        wait_for(lambda: running.metric("ecr_pullthrough_resyncs_total") >= resyncs + 3, what="three resyncs")
        wait_for(lambda: running.metric("ecr_pullthrough_queue_depth") == 0, what="the resync work done")
        assert all_hold(core, names, ecr.password(settled))
        assert ecr.tokens_issued == settled, "no new token was needed"
        assert secret_writes(control_plane, set(names)) == writes, "a resync with nothing changed wrote a secret"
        no_token_logged(running, ecr)


def test_ecr_unreachable_keeps_the_secrets_and_recovers(
    control_plane: ControlPlane, kubeconfig: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    [name] = namespaces(control_plane, "outage", 1)
    ecr.lifetime_seconds = 6
    with controller_process(kubeconfig, ecr, tmp_path, "a", *FAST) as running:
        wait_for(lambda: password_in(secret(core, name)) == ecr.password(1), what="the first token")
        ecr.stop()

        # Readiness is the process's health: an AWS outage is reported in /readyz's body, with a 200.
        reported = wait_for(
            lambda: readyz_when(running, 200, "GetAuthorizationToken failed: Unreachable"),
            timeout=20,
            what="/readyz to report the outage",
        )
        assert any("GetAuthorizationToken failed: Unreachable" in p for p in json.loads(reported)["problems"])
        assert (
            running.metric("ecr_pullthrough_aws_errors_total", operation="GetAuthorizationToken", code="Unreachable")
            >= 1
        )
        assert password_in(secret(core, name)) == ecr.password(1), "the existing secret stays"

        ecr.start()
        wait_for(lambda: "problems" not in json.loads(running.get("/readyz")[1]), timeout=30, what="recovery")
        wait_for(lambda: password_in(secret(core, name)) == ecr.password(ecr.tokens_issued), what="a fresh token")
        assert ecr.tokens_issued >= 2
        no_token_logged(running, ecr)


def test_the_controller_catches_up_after_the_api_server_restarts(
    control_plane: ControlPlane, kubeconfig: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    [before] = namespaces(control_plane, "before-restart", 1)
    with controller_process(kubeconfig, ecr, tmp_path, "a", *FAST) as running:
        wait_for(lambda: password_in(secret(core, before)) == ecr.password(1), what="the first secret")
        control_plane.restart_apiserver()
        [after] = namespaces(control_plane, "after-restart", 1)
        # A leader that lost the lease during the restart forgets its token; on leading again it adopts the
        # one in its own namespace's Secret, or fetches a new one if that Secret was not written yet.
        issued = lambda: {ecr.password(n) for n in range(1, ecr.tokens_issued + 1)}  # noqa: E731
        wait_for(lambda: password_in(secret(core, after)) in issued(), timeout=60, what="catching up")
        assert running.process.poll() is None


def test_only_the_leader_writes_and_a_standby_takes_over(
    control_plane: ControlPlane, kubeconfig: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    with (
        controller_process(kubeconfig, ecr, tmp_path, "first", *FAST) as first,
        controller_process(kubeconfig, ecr, tmp_path, "second", *FAST) as second,
    ):
        wait_for(lambda: leader(first) or leader(second), what="a leader")
        active, standby = (first, second) if leader(first) else (second, first)
        [name] = namespaces(control_plane, "leader", 1)
        wait_for(lambda: password_in(secret(core, name)) is not None, what="the leader's write")
        assert not leader(standby)
        for result in ("created", "updated"):
            assert standby.metric("ecr_pullthrough_secret_writes_total", result=result) == 0
        assert standby.get("/readyz")[0] == 200, "a standby is ready to take over"

        stopped = time.monotonic()
        assert active.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        wait_for(lambda: leader(standby), timeout=10, what="the standby to take over")
        takeover = time.monotonic() - stopped
        assert takeover < 4, f"the lease was not released on SIGTERM ({takeover:.1f}s)"
        [later] = namespaces(control_plane, "takeover", 1)
        wait_for(lambda: password_in(secret(core, later)) is not None, what="the new leader's write")

        with controller_process(kubeconfig, ecr, tmp_path, "third", *FAST) as third:
            wait_for(lambda: third.get("/readyz")[0] == 200, what="a third replica, standing by")
            assert not leader(third)
            standby.stop(signal.SIGKILL)  # no release: the lease must expire
            wait_for(lambda: leader(third), timeout=4 + 10, what="takeover after the lease expires")


def test_excluded_namespaces_get_no_secret(
    control_plane: ControlPlane, kubeconfig: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    by_name, opted_out, by_selector, included = (f"{kind}-{suffix}" for kind in ("named", "optout", "legacy", "plain"))
    control_plane.create_namespace(by_name)
    control_plane.create_namespace(opted_out, labels={"ecr-pullthrough/skip": "true"})
    control_plane.create_namespace(by_selector, labels={"team": "legacy"})
    control_plane.create_namespace(included, labels={"team": "web"})
    args = (*FAST, "--exclude-namespaces", f"kube-system,{by_name}", "--exclude-namespace-selector", "team=legacy")
    with controller_process(kubeconfig, ecr, tmp_path, "a", *args) as running:
        wait_for(lambda: password_in(secret(core, included)) == ecr.password(1), what="the included namespace")
        wait_for(lambda: running.metric("ecr_pullthrough_queue_depth") == 0, what="all work done")
        for excluded in (by_name, opted_out, by_selector):
            assert secret(core, excluded) is None, excluded


STATUS_CONFIGMAP = "ecr-pullthrough-upstream-status"  # the chart's name for release "ecr-pullthrough"


def published(core: client.CoreV1Api) -> dict[str, Any] | None:
    try:
        configmap = core.read_namespaced_config_map(STATUS_CONFIGMAP, RELEASE_NAMESPACE)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return json.loads((configmap.data or {})["status.json"])  # type: ignore[no-any-return]


def test_upstreams_are_verified_and_published_and_a_broken_one_is_explained(
    control_plane: ControlPlane, kubeconfig: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    args = (
        *FAST,
        *NO_WRITE_LIMIT,
        "--upstream-status-configmap",
        STATUS_CONFIGMAP,
        "--verify-seconds",
        "1",
        "--upstreams",
        "quay.io=quay",
    )
    with controller_process(kubeconfig, ecr, tmp_path, "a", *args) as running:

        def verified() -> dict[str, Any] | None:
            status = published(core)
            return status if status and all(u["verified"] for u in status["upstreams"].values()) else None

        status = wait_for(verified, timeout=20, what="both upstreams verified")
        assert set(status["upstreams"]) == {"docker.io", "quay.io"}
        assert running.metric("ecr_pullthrough_upstream_verified", upstream="quay.io") == 1

        ecr.import_denied.add("quay")

        def quay_broken() -> str | None:
            status = published(core)
            entry = (status or {}).get("upstreams", {}).get("quay.io", {})
            return entry.get("reason") if entry and not entry["verified"] else None

        reason = wait_for(quay_broken, timeout=20, what="quay.io to be reported unverified")
        assert "ecr:BatchImportUpstreamImage" in reason
        assert published(core)["upstreams"]["docker.io"]["verified"] is True  # type: ignore[index]
        readiness = json.loads(wait_for(lambda: readyz_when(running, 200, "quay.io unverified"), what="readyz"))
        assert any(
            "upstream quay.io unverified: pulling prometheus/busybox:latest through the cache was refused" in problem
            for problem in readiness["problems"]
        )
        assert running.metric("ecr_pullthrough_upstream_verified", upstream="quay.io") == 0

        def event() -> bool:
            events = core.list_namespaced_event(RELEASE_NAMESPACE).items
            return any(e.reason == "UpstreamUnverified" and "quay.io" in (e.message or "") for e in events)

        wait_for(event, what="an UpstreamUnverified event")

        ecr.import_denied.clear()
        wait_for(verified, timeout=20, what="recovery")
        no_token_logged(running, ecr)


@pytest.mark.parametrize(
    ("verb", "resource", "name", "namespace", "allowed"),
    [
        ("get", "secrets", SECRET, "default", True),
        ("create", "secrets", "", "default", True),
        ("update", "secrets", SECRET, "default", True),
        ("watch", "namespaces", "", "", True),
        ("get", "secrets", "someone-elses", "default", False),
        ("list", "secrets", "", "default", False),
        ("delete", "secrets", SECRET, "default", False),
        ("delete", "namespaces", "default", "", False),
        ("list", "pods", "", "default", False),
        ("create", "pods", "", "default", False),
        ("update", "configmaps", "", "default", False),
    ],
)
def test_the_chart_role_allows_what_the_controller_needs_and_nothing_more(
    control_plane: ControlPlane, kubeconfig: Path, verb: str, resource: str, name: str, namespace: str, allowed: bool
) -> None:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=CONTROLLER_USER,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{RELEASE_NAMESPACE}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, resource=resource, name=name or None, namespace=namespace or None
            ),
        )
    )
    with control_plane.api_client() as api:
        answer = client.AuthorizationV1Api(api).create_subject_access_review(review)
    assert answer.status is not None
    assert answer.status.allowed is allowed


def test_the_webhook_rewrites_docker_hub_only_once_the_controller_has_verified_it(
    control_plane: ControlPlane, kubeconfig: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    """The whole chain: controller verifies -> ConfigMap -> mounted file -> webhook -> pods via the API server."""
    from tests.e2e.fixtures_webhook import create_pod, images, pod, registered_webhook, unique

    status_file = tmp_path / "status" / "status.json"
    status_file.parent.mkdir()

    def kubelet_sync() -> dict[str, Any] | None:
        """What the kubelet does for the mounted ConfigMap: copy its data into the file."""
        status = published(core)
        if status is not None:
            status_file.write_text(json.dumps(status))
        return status

    ecr.import_denied.add("docker-hub")  # the controller's role lacks ecr:BatchImportUpstreamImage
    # A new leader publishes its first verification once its first pass reached every namespace.
    args = (*FAST, *NO_WRITE_LIMIT, "--upstream-status-configmap", STATUS_CONFIGMAP, "--verify-seconds", "1")
    with (
        controller_process(kubeconfig, ecr, tmp_path, "a", *args),
        registered_webhook(
            control_plane, tmp_path, "--upstream-status-file", str(status_file), target=unique("verified")
        ) as webhook,
        control_plane.api_client() as api,
    ):
        wait_for(
            lambda: (s := kubelet_sync()) and not s["upstreams"]["docker.io"]["verified"], what="docker.io unverified"
        )
        namespace = webhook.namespace("verified")

        def stored_image(name: str) -> str:
            created = create_pod(api, namespace, pod(name, {"web": "nginx:1.27"}), dry_run=True)
            return images(created)["web"]

        def unverified_reason() -> str | None:
            name = unique("before")
            assert stored_image(name) == "nginx:1.27", "an unverified upstream is never rewritten"
            [entry] = webhook.admissions(namespace, name)
            [item] = entry["unchanged"]
            assert item["reason"] == "upstream-unverified"
            return item["detail"] if "status file" not in item["detail"] else None  # the file is read once a second

        assert "ecr:BatchImportUpstreamImage" in wait_for(unverified_reason, what="the webhook to read the status")

        ecr.import_denied.clear()  # the role is fixed
        wait_for(lambda: (s := kubelet_sync()) and s["upstreams"]["docker.io"]["verified"], what="docker.io verified")
        wait_for(
            lambda: stored_image(unique("after")) == f"{REGISTRY}/docker-hub/library/nginx:1.27",
            what="rewriting after verification",
        )


def test_at_debug_level_no_token_reaches_the_log(
    control_plane: ControlPlane, kubeconfig: Path, core: client.CoreV1Api, ecr: FakeEcr, tmp_path: Path
) -> None:
    """`--log-level debug` is ours only: botocore's debug log would print the GetAuthorizationToken response."""
    names = namespaces(control_plane, "debug", 3)
    with controller_process(
        kubeconfig, ecr, tmp_path, "a", *FAST, "--log-level", "debug", "--resync-seconds", "1", *NO_WRITE_LIMIT
    ) as running:
        wait_for(lambda: all_hold(core, names, ecr.password(1)), what="the secrets")
        wait_for(lambda: '"event":"secret in sync"' in running.log(), what="our debug lines (a resync)")
        written = secret(core, names[0])
        assert written is not None
    log = running.log()
    no_token_logged(running, ecr)
    assert written["data"][".dockerconfigjson"] not in log
    loggers = {json.loads(line)["logger"] for line in log.splitlines() if line.startswith("{")}
    assert not {name for name in loggers if name.startswith(("botocore", "boto3", "urllib3", "kubernetes"))}


def readyz_when(running: ControllerProcess, status: int, text: str) -> str | None:
    """/readyz's body once it answers `status` and mentions `text`."""
    code, body = running.get("/readyz")
    return body if code == status and text in body else None


def test_the_aws_identity_is_logged_at_start_and_shown_in_readyz(
    control_plane: ControlPlane, kubeconfig: Path, ecr: FakeEcr, tmp_path: Path
) -> None:
    principal = ecr.principals["AKIDEXAMPLE"]
    with controller_process(kubeconfig, ecr, tmp_path, "a", *FAST) as running:
        # Until the first token is had, the body also lists "no valid ECR token yet" as a problem.
        expected = {"status": "ready", "awsIdentity": principal}
        wait_for(lambda: json.loads(running.get("/readyz")[1]) == expected, what="/readyz naming the identity")
        [line] = [json.loads(line) for line in running.log().splitlines() if '"AWS caller identity"' in line]
        assert line["arn"] == principal

    # The identity and AWS problems inform; neither decides the status code.
    ecr.mode = "deny"
    forget_adoptable_token(control_plane)  # "b" must ask for a token, not adopt the one "a" left
    with controller_process(kubeconfig, ecr, tmp_path, "b", *FAST) as running:
        refused = wait_for(lambda: readyz_when(running, 200, "AccessDeniedException"), what="/readyz: 200")
        assert json.loads(refused)["awsIdentity"] == principal
    ecr.mode = "ok"
    ecr.principals.clear()
    with controller_process(kubeconfig, ecr, tmp_path, "c", *FAST) as running:
        unknown = wait_for(lambda: readyz_when(running, 200, "InvalidClientTokenId"), what="/readyz: 200")
        assert json.loads(unknown)["awsIdentity"] == "unknown"


def node_without_irsa(ecr: FakeEcr, imds: FakeImds, folder: Path) -> dict[str, str]:
    """A pod whose IRSA is mis-bound: no credentials of its own, only the node's instance role through IMDS."""
    ecr.principals[IMDS_ACCESS_KEY] = f"arn:aws:sts::123456789012:assumed-role/{IMDS_ROLE}/i-0123456789abcdef0"
    return {
        "AWS_ENDPOINT_URL_ECR": ecr.url,
        "AWS_ENDPOINT_URL_STS": ecr.url,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,  # loopback: never the real link-local address
        "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-credentials"),
        "AWS_CONFIG_FILE": str(folder / "no-config"),
    }


def test_no_silent_fallback_to_the_node_role(kubeconfig: Path, ecr: FakeEcr, tmp_path: Path) -> None:
    with fake_imds() as imds:
        aws = node_without_irsa(ecr, imds, tmp_path)
        with controller_process(kubeconfig, ecr, tmp_path, "a", *FAST, aws=aws) as running:
            text = wait_for(
                lambda: readyz_when(running, 200, "NoCredentials"), what="/readyz to say there are no credentials"
            )
            document = json.loads(text)
            assert document["awsIdentity"] == "unknown"
            assert "NoCredentials" in document["awsIdentityError"]
        assert imds.requests == []
        assert ecr.tokens_issued == 0

        # Allowed, the same pod uses the node's role, and says so.
        node_role = ecr.principals[IMDS_ACCESS_KEY]
        with controller_process(
            kubeconfig, ecr, tmp_path, "b", *FAST, "--allow-instance-metadata=true", aws=aws
        ) as running:
            wait_for(lambda: node_role in running.get("/readyz")[1], what="/readyz naming the node's role")
        assert imds.requests
