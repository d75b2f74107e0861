import datetime
import json
from pathlib import Path

import pytest

from tests.strategies import REGISTRY
from webhook.admission.statusfile import StatusFile
from webhook.core.rewrite import Reason, RewriteRules, decide
from webhook.core.upstream_status import (
    HOLD_SECONDS,
    Check,
    StatusDocument,
    UpstreamStatus,
    Verification,
    advance,
    verification,
)

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)
HALF = datetime.timedelta(seconds=30)
RULES = RewriteRules(registry=REGISTRY, upstreams={"quay.io": "quay"})


def document(checked_at: datetime.datetime = NOW, **verified: bool) -> StatusDocument:
    return StatusDocument(
        checked_at,
        tuple(
            UpstreamStatus(host.replace("_", "."), "p", ok, "" if ok else f"{host} is broken: fix it", checked_at)
            for host, ok in verified.items()
        ),
    )


def test_the_document_round_trips() -> None:
    original = document(docker_io=True, quay_io=False)
    assert StatusDocument.parse(original.to_json()) == original


@pytest.mark.parametrize("text", ["", "{", "[]", '{"version": 2}', '{"version": 1, "checkedAt": "2026-01-01"}'])
def test_a_broken_document_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="status"):
        StatusDocument.parse(text)


def test_only_verified_upstreams_are_rewritten() -> None:
    trusted = verification(document(docker_io=True, quay_io=False), NOW, HOUR)
    assert decide("nginx", RULES, trusted).reason is Reason.REWRITTEN
    unverified = decide("quay.io/org/app", RULES, trusted)
    assert (unverified.reason, unverified.detail) == (Reason.UPSTREAM_UNVERIFIED, "quay_io is broken: fix it")
    assert decide("ghcr.io/a/b", RULES, trusted).reason is Reason.OTHER_REGISTRY, "not an upstream at all"


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (verification(None, NOW, HOUR, "no upstream status file at /x yet"), "no upstream status file at /x yet"),
        (verification(document(NOW - 2 * HOUR, docker_io=True), NOW, HOUR), "stale: last checked 7200s ago"),
    ],
)
def test_unknown_status_means_no_rewriting(given: Verification, reason: str) -> None:
    decision = decide("nginx", RULES, given)
    assert decision.reason is Reason.UPSTREAM_UNVERIFIED
    assert reason in decision.detail


def test_the_status_file_is_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import webhook.admission.statusfile

    monkeypatch.setattr(webhook.admission.statusfile, "CHECK_INTERVAL_SECONDS", 0)
    path = tmp_path / "status.json"
    status = StatusFile(path, datetime.timedelta(hours=1))
    assert "no upstream status file" in status.current().unknown

    now = datetime.datetime.now(datetime.UTC)
    path.write_text(document(now, docker_io=True).to_json())
    assert status.current().verified == {"docker.io"}

    path.write_text("{ corrupt")
    assert "unreadable" in status.current().unknown

    path.write_text(document(now, docker_io=False).to_json())
    current = status.current()
    assert (current.verified, current.reason_for("docker.io")) == (frozenset(), "docker_io is broken: fix it")


def test_hysteresis_holds_a_verified_upstream_through_transient_errors() -> None:
    start = NOW
    verified = advance(None, Check("docker.io", "p"), start)
    assert (verified.verified, verified.checked_at, verified.held_since) == (True, start, None)
    throttled = Check("docker.io", "p", "ThrottlingException", transient=True)
    status, at = verified, start
    for failure in range(1, 6):  # 5 failures 30 s apart: 2 minutes, under HOLD_SECONDS
        at = start + datetime.timedelta(seconds=30 * failure)
        status = advance(status, throttled, at)
        assert status.verified, failure
        assert (status.checked_at, status.held_since, status.transient_failures) == (start, start + HALF, failure)
    at = start + datetime.timedelta(seconds=HOLD_SECONDS + 30)
    flipped = advance(status, throttled, at)
    assert not flipped.verified
    assert "transient errors since" in flipped.reason
    assert advance(flipped, Check("docker.io", "p"), at).verified  # the next success restores it


def test_a_definitive_error_flips_at_once_and_a_transient_one_never_verifies() -> None:
    verified = advance(None, Check("docker.io", "p"), NOW)
    denied = advance(verified, Check("docker.io", "p", "AccessDenied"), NOW + HOUR)
    assert (denied.verified, denied.reason) == (False, "AccessDenied")
    assert not advance(None, Check("docker.io", "p", "Throttling", transient=True), NOW).verified
    assert not advance(denied, Check("docker.io", "p", "Throttling", transient=True), NOW + HOUR).verified
    other_prefix = advance(verified, Check("docker.io", "other", "Throttling", transient=True), NOW + HOUR)
    assert not other_prefix.verified, "a hold is for the prefix that was verified"


def test_a_held_upstream_is_trusted_only_within_the_maximum_age_of_its_last_success() -> None:
    held = UpstreamStatus("docker.io", "p", True, "Throttling", NOW - 3 * HOUR, NOW - 3 * HOUR, 2)
    document = StatusDocument(NOW, (held,))
    assert StatusDocument.parse(document.to_json()) == document  # additive fields round-trip
    trusted = verification(document, NOW, 2 * HOUR)
    assert trusted.verified == frozenset()
    assert "no successful check for 10800s (Throttling)" in trusted.reason_for("docker.io")
    legacy = json.loads(document.to_json())
    del legacy["upstreams"]["docker.io"]["heldSince"]  # a document from the previous version reads the same
    assert StatusDocument.parse(json.dumps(legacy)).upstreams[0].verified
