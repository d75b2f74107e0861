"""doctor's lines for the controller's published upstream status."""

from __future__ import annotations

import datetime

from webhook.core.rewrite import RewriteRules
from webhook.core.upstream_status import StatusDocument, UpstreamStatus
from webhook.ops.controller_view import upstreams

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
TARGET = RewriteRules(registry=REGISTRY).status_target()


def test_a_degraded_upstream_fails_with_the_guard_s_evidence_and_what_to_check() -> None:
    status = UpstreamStatus(
        "docker.io",
        "docker-hub",
        True,
        "",
        NOW,
        REGISTRY,
        degraded_since=NOW - datetime.timedelta(minutes=3),
        degraded_reason="6 of 7 pulls through the cache failed in the last 10 min (2 images, 4 pods, 2 nodes)",
        trial_one_in=10,
    )
    [result] = upstreams(StatusDocument(NOW, (status,)), "", TARGET, NOW, datetime.timedelta(hours=2))
    assert result.status == "fail"
    assert "degraded since 2026-11-30T11:57:00+00:00: 6 of 7 pulls through the cache failed" in result.message
    assert "one in 10 is still rewritten" in result.message
    assert "node role" in result.fix
