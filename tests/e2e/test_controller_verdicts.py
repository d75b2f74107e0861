"""Drills: the controller's verdicts on AWS, steady under transient errors and honest about tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.controllers import controller_process
from tests.e2e.controlplane import ControlPlane
from tests.e2e.test_controller import (  # noqa: F401 (fixtures)
    FAST,
    NO_WRITE_LIMIT,
    STATUS_CONFIGMAP,
    core,
    ecr,
    kubeconfig,
    no_adoptable_token,
    published,
    readyz_when,
)
from tests.fake_ecr import FakeEcr
from tests.support import wait_for

# A new leader publishes its first verification once its first pass reached every namespace: the other
# tests' namespaces get their Secrets at once.
VERIFY = (*FAST, *NO_WRITE_LIMIT, "--upstream-status-configmap", STATUS_CONFIGMAP, "--verify-seconds", "1")


def entry(core: client.CoreV1Api, upstream: str) -> dict[str, Any]:  # noqa: F811
    return ((published(core) or {}).get("upstreams") or {}).get(upstream) or {}


def test_a_transient_error_holds_the_verdict_instead_of_flipping_it(
    control_plane: ControlPlane,
    kubeconfig: Path,  # noqa: F811
    core: client.CoreV1Api,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Item 1: one ThrottlingException on the rule listing published docker.io unverified, cluster-wide."""
    with controller_process(kubeconfig, ecr, tmp_path, "a", *VERIFY) as running:
        wait_for(lambda: entry(core, "docker.io").get("verified") is True, timeout=30, what="docker.io verified")
        last_success = entry(core, "docker.io")["checkedAt"]
        ecr.throttled.add("DescribePullThroughCacheRules")
        held = wait_for(
            lambda: (e := entry(core, "docker.io")).get("heldSince") and e, timeout=30, what="docker.io held"
        )
        assert held["verified"] is True, "a transient error must not flip the verdict"
        assert held["checkedAt"] == last_success, "checkedAt keeps meaning the last success"
        assert "ThrottlingException" in held["reason"]
        assert running.metric("ecr_pullthrough_upstream_held", upstream="docker.io") == 1
        assert running.metric("ecr_pullthrough_upstream_check_failures_total", upstream="docker.io", kind="transient")
        body = json.loads(running.get("/readyz")[1])
        assert any("held verified through transient errors" in p for p in body["problems"])
        # Still verified at the second transient failure, 30 s later (the flip needs 3 spanning 5 minutes).
        second = wait_for(
            lambda: (e := entry(core, "docker.io")).get("transientFailures", 0) >= 2 and e,
            timeout=75,
            interval=0.5,
            what="a second transient failure",
        )
        assert second["verified"] is True
        ecr.throttled.clear()
        wait_for(
            lambda: (e := entry(core, "docker.io")).get("verified") is True and "heldSince" not in e,
            timeout=60,
            interval=0.5,
            what="the hold to end with the next success",
        )


def test_an_expired_token_unverifies_even_an_upstream_without_a_probe(
    control_plane: ControlPlane,
    kubeconfig: Path,  # noqa: F811
    core: client.CoreV1Api,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Item 2: an upstream verified by its rule alone stayed verified after the token the Secrets hold expired."""
    ecr.lifetime_seconds = 8
    args = (*VERIFY, "--upstreams", "ghcr.io=github", "--token-refresh-floor-seconds", "1")
    with controller_process(kubeconfig, ecr, tmp_path, "a", *args) as running:
        wait_for(lambda: entry(core, "ghcr.io").get("verified") is True, timeout=30, what="ghcr.io verified")
        ecr.token_denied = True  # no renewal: the token expires within 8 s
        unverified = wait_for(
            lambda: (e := entry(core, "ghcr.io")).get("verified") is False and e,
            timeout=40,
            what="ghcr.io unverified once the token expired",
        )
        assert "the ECR token expired" in unverified["reason"]
        assert readyz_when(running, 200, "GetAuthorizationToken failed")
        ecr.token_denied = False
        wait_for(lambda: entry(core, "ghcr.io").get("verified") is True, timeout=60, what="recovery")
