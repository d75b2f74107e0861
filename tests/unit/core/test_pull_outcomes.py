"""The pull-outcome guard's judgement over recorded kubelet Event sequences."""

from __future__ import annotations

import datetime
import uuid

import pytest

from webhook.core.pull_outcomes import (
    OutcomeWindow,
    Thresholds,
    degradation,
    is_trial,
    outcome,
    recovery_due,
    upstream_of,
)
from webhook.core.rewrite import RewriteRules
from webhook.core.upstream_status import StatusDocument, UpstreamStatus, verification

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
TARGET = RewriteRules(registry=REGISTRY, upstreams={"quay.io": "quay"}).status_target()
T0 = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
THRESHOLDS = Thresholds(window_seconds=600, min_failures=5, min_images=2, min_pods=3, failure_ratio=0.5)

# As kubelet 1.3x words them (pkg/kubelet/images) around containerd's errors.
FORBIDDEN = (
    'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed to resolve reference '
    '"{image}": pulling from host {host} failed with status code [manifests 1.27]: 403 Forbidden'
)
NOT_FOUND = 'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": {image}: not found'
NO_SPACE = "rpc error: code = Unknown desc = failed to extract layer: write /var/lib/x: no space left on device"


def cached(name: str) -> str:
    return f"{REGISTRY}/docker-hub/library/{name}"


def failed(image: str, error: str) -> tuple[str, str]:
    return "Failed", f'Failed to pull image "{image}": {error.format(image=image, host=REGISTRY)}'


def pulled(image: str) -> tuple[str, str]:
    return "Pulled", f'Successfully pulled image "{image}" in 1.2s (1.2s including waiting). Image size: 12 bytes.'


def replay(events: list[tuple[float, str, str, tuple[str, str]]]) -> OutcomeWindow:
    """Feed (seconds after T0, pod, node, (reason, message)) into one upstream's window."""
    window = OutcomeWindow(THRESHOLDS)
    for seconds, pod, node, (reason, message) in events:
        found = outcome(reason, message, at=T0.timestamp() + seconds, pod=pod, node=node, target=TARGET)
        if found is not None:
            window.add(found)
    return window


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def test_pull_events_become_outcomes_only_for_images_under_the_cache() -> None:
    def judged(reason: str, message: str) -> tuple[str, bool] | None:
        found = outcome(reason, message, at=0, pod="ns/p", node="n", target=TARGET)
        return None if found is None else (found.upstream, found.failed)

    assert judged(*pulled(cached("nginx:1.27"))) == ("docker.io", False)
    assert judged(*failed(cached("nginx:1.27"), FORBIDDEN)) == ("docker.io", True)
    assert judged(*failed(f"{REGISTRY}/quay/prometheus/x:1", NOT_FOUND)) == ("quay.io", True)
    # Not through the cache: another registry, an unknown prefix, the original reference.
    assert judged(*failed("nginx:1.27", FORBIDDEN)) is None
    assert judged(*failed(f"{REGISTRY}/team/app:1", FORBIDDEN)) is None
    assert judged(*pulled("ghcr.io/org/app:1")) is None
    # A failure on the node, not at the cache; the kubelet's follow-up events that name no image.
    assert judged(*failed(cached("nginx:1.27"), NO_SPACE)) is None
    assert judged("Failed", "Error: ErrImagePull") is None
    assert judged("BackOff", f'Back-off pulling image "{cached("nginx")}"') is None
    assert upstream_of(f"{REGISTRY}/quay/x/y:1", TARGET) == "quay.io"


def test_failures_of_several_images_from_several_pods_degrade_the_upstream_with_the_evidence() -> None:
    window = replay(
        [
            (0, "default/web-1", "node-a", pulled(cached("nginx:1.27"))),
            (10, "default/web-2", "node-a", failed(cached("nginx:1.27"), FORBIDDEN)),
            (20, "default/web-3", "node-b", failed(cached("nginx:1.27"), FORBIDDEN)),
            (30, "shop/cache-1", "node-b", failed(cached("redis:7.2"), FORBIDDEN)),
            (40, "shop/cache-1", "node-b", failed(cached("redis:7.2"), FORBIDDEN)),
        ]
    )
    assert degradation(None, window, at(45)) is None  # four failures: one short of five
    window.add(replay([(50, "shop/cache-2", "node-a", failed(cached("redis:7.2"), FORBIDDEN))])._outcomes[0])
    found = degradation(None, window, at(55))
    assert found is not None
    assert found.since == at(55)
    assert found.evidence.startswith(
        "5 of 6 pulls through the cache failed in the last 10 min (2 images, 4 pods, 2 nodes)"
    )
    assert "403 Forbidden" in found.evidence


def test_one_image_that_does_not_exist_never_degrades_the_upstream() -> None:
    typo = cached("ngnix:1.27")
    window = replay([(i, f"default/web-{i}", f"node-{i % 3}", failed(typo, NOT_FOUND)) for i in range(200)])
    assert window.evidence(T0.timestamp() + 200) is None
    assert degradation(None, window, at(200)) is None


def test_successes_keep_the_failure_ratio_under_the_threshold() -> None:
    events = [(i, f"a/p{i}", "n", failed(cached(f"img{i % 3}:1"), FORBIDDEN)) for i in range(10)]
    events += [(100 + i, f"b/q{i}", "n", pulled(cached(f"ok{i}:1"))) for i in range(11)]
    assert replay(events).evidence(T0.timestamp() + 200) is None  # 10 failed of 21


def test_failures_leave_the_window_as_it_slides() -> None:
    events = [(i, f"a/p{i}", "n", failed(cached(f"img{i % 3}:1"), FORBIDDEN)) for i in range(6)]
    window = replay(events)
    assert window.evidence(T0.timestamp() + 10) is not None
    assert window.evidence(T0.timestamp() + 700) is None


def test_recovery_needs_a_working_pull_and_a_quiet_period_that_a_failed_trial_restarts() -> None:
    thresholds = Thresholds(
        window_seconds=600, min_failures=5, min_images=2, min_pods=3, failure_ratio=0.5, quiet_seconds=300
    )
    window = OutcomeWindow(thresholds)
    for seconds, pod, node, (reason, message) in [
        (i, f"a/p{i}", "n", failed(cached(f"img{i % 3}:1"), FORBIDDEN)) for i in range(6)
    ]:
        found = outcome(reason, message, at=T0.timestamp() + seconds, pod=pod, node=node, target=TARGET)
        assert found is not None
        window.add(found)
    degraded = degradation(None, window, at(10))
    assert degraded is not None
    assert degradation(degraded, window, at(200)) == degraded  # still failing evidence in the window
    # A trial pod fails at 250: quiet from then on, so not recovered at 5 + 300.
    trial = outcome(*failed(cached("img0:1"), FORBIDDEN), at=T0.timestamp() + 250, pod="a/t", node="n", target=TARGET)
    assert trial is not None
    window.add(trial)
    assert degradation(degraded, window, at(400)) is not None
    # No pull has succeeded since: a gap between two retries proves nothing; a whole window must pass.
    assert recovery_due(degraded, window) == T0.timestamp() + 250 + 600
    assert degradation(degraded, window, at(560)) is not None
    # A pull through the cache works again (a trial pod): 300 s after the last failure, recovered.
    success = outcome(*pulled(cached("img1:1")), at=T0.timestamp() + 300, pod="a/t2", node="n", target=TARGET)
    assert success is not None
    window.add(success)
    assert recovery_due(degraded, window) == T0.timestamp() + 550
    assert degradation(degraded, window, at(549)) is not None
    # Recovered, and the old failures no longer count.
    assert degradation(degraded, window, at(550)) is None
    assert degradation(None, window, at(551)) is None


def test_without_a_working_pull_recovery_waits_a_whole_window() -> None:
    window = replay([(i, f"a/p{i}", "n", failed(cached(f"img{i % 3}:1"), FORBIDDEN)) for i in range(6)])
    degraded = degradation(None, window, at(10))
    assert degraded is not None
    assert degradation(degraded, window, at(5 + 599)) is not None
    assert degradation(degraded, window, at(5 + 600)) is None


def test_one_pod_in_n_is_a_trial_by_its_uid() -> None:
    uids = [str(uuid.UUID(int=i)) for i in range(10_000)]
    chosen = sum(is_trial(uid, 10) for uid in uids)
    assert 800 < chosen < 1200
    assert all(is_trial(uid, 1) for uid in uids[:10])
    assert is_trial(uids[7], 10) == is_trial(uids[7], 10)


@pytest.mark.parametrize("trial_pod", [False, True])
def test_a_degraded_upstream_is_not_rewritten_except_on_a_trial_pod(trial_pod: bool) -> None:
    status = UpstreamStatus(
        "docker.io",
        "docker-hub",
        True,
        "",
        T0,
        REGISTRY,
        degraded_since=T0,
        degraded_reason="5 of 6 pulls through the cache failed",
        trial_one_in=10,
    )
    document = StatusDocument.parse(StatusDocument(T0, (status,)).to_json())
    assert document.upstreams == (status,)
    seen = verification(document, at(1), datetime.timedelta(hours=1), target=TARGET)
    assert seen.verified == frozenset()
    assert seen.reason_for("docker.io") == "degraded: 5 of 6 pulls through the cache failed"
    assert seen.trial == {"docker.io": 10}
    if trial_pod:
        assert seen.with_trial(frozenset({"docker.io"})).verified == frozenset({"docker.io"})
