"""The node test bed's Go components are pinned where build.py expects them."""

from __future__ import annotations

from tests.controlplane import build


def test_the_kubelet_is_built_at_kube_apiservers_version() -> None:
    assert build.pinned_version("kubelet") == build.pinned_version("kube-apiserver")


def test_the_kubelet_gets_the_staging_replaces_and_version_of_kube_apiserver() -> None:
    assert "kubelet" in build.KUBERNETES_COMPONENTS
    assert "-X k8s.io/component-base/version.gitVersion=v1." in build._ldflags("kubelet", "v1.35.4", build.WRAPPERS)


def test_crane_is_pinned() -> None:
    assert build.pinned_version("crane").startswith("v0.")
