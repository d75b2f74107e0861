"""The local control plane itself: the right kube-apiserver, pods admitted, service-account tokens accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.controlplane import build
from tests.e2e.controlplane import ControlPlane
from tests.support import require_binary

NAMESPACE = "smoke-control-plane"


def test_reports_the_pinned_kube_apiserver_version(control_plane: ControlPlane) -> None:
    with control_plane.api_client() as api:
        version = client.VersionApi(api).get_code()
    assert version.git_version == build.pinned_version("kube-apiserver")


def test_admits_a_pod_and_accepts_its_service_account_token(control_plane: ControlPlane) -> None:
    control_plane.create_namespace(NAMESPACE, labels={"purpose": "smoke"})
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="sleeper"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox:1.36")]),
    )
    with control_plane.api_client() as api:
        created = client.CoreV1Api(api).create_namespaced_pod(NAMESPACE, pod)
    # The ServiceAccount admission plugin is on and found the default ServiceAccount.
    assert created.spec.service_account_name == "default"

    token = control_plane.service_account_token(NAMESPACE, "default")
    with control_plane.api_client(token=token) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
        assert review.status.user_info.username == f"system:serviceaccount:{NAMESPACE}:default"
        # Authenticated but not authorised: 403, not 401.
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(api).list_namespace()
    assert denied.value.status == 403


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_binary_fails_on_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(build, "binary_path", lambda name: tmp_path / name)
    with pytest.raises(outcome, match=r"etcd not found at .*: run `make controlplane`"):
        require_binary("etcd")
