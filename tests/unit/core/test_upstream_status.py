import datetime
import json
from pathlib import Path

import pytest

from tests.fixtures.release_0_1_0 import upstream_status as release_0_1_0
from tests.strategies import REGISTRY
from webhook.admission.statusfile import StatusFile
from webhook.core.rewrite import Reason, RewriteRules, decide
from webhook.core.upstream_status import (
    HOLD_SECONDS,
    Check,
    StatusDocument,
    Target,
    UpstreamStatus,
    Verification,
    advance,
    verification,
)

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)
HALF = datetime.timedelta(seconds=30)
RULES = RewriteRules(registry=REGISTRY, upstreams={"quay.io": "quay"})
PREFIXES = {"docker.io": "docker-hub", "quay.io": "quay"}
OTHER_REGISTRY = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"


def document(
    checked_at: datetime.datetime = NOW, registry: str = REGISTRY, prefixes: dict[str, str] = PREFIXES, **verified: bool
) -> StatusDocument:
    statuses = []
    for host, ok in verified.items():
        upstream = host.replace("_", ".")
        reason = "" if ok else f"{host} is broken: fix it"
        statuses.append(UpstreamStatus(upstream, prefixes[upstream], ok, reason, checked_at, registry))
    return StatusDocument(checked_at, tuple(statuses))


def trusted_by(rules: RewriteRules, text: str) -> Verification:
    """What a webhook with `rules` trusts in the document `text` (as its status file would)."""
    return verification(StatusDocument.parse(text), NOW, HOUR, target=rules.status_target())


def test_the_document_round_trips() -> None:
    original = document(docker_io=True, quay_io=False)
    assert StatusDocument.parse(original.to_json()) == original


@pytest.mark.parametrize("text", ["", "{", "[]", '{"version": 2}', '{"version": 1, "checkedAt": "2026-01-01"}'])
def test_a_broken_document_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="status"):
        StatusDocument.parse(text)


def test_only_verified_upstreams_are_rewritten() -> None:
    trusted = verification(document(docker_io=True, quay_io=False), NOW, HOUR, target=RULES.status_target())
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
    held = UpstreamStatus(
        "docker.io", "p", True, "Throttling", NOW - 3 * HOUR, held_since=NOW - 3 * HOUR, transient_failures=2
    )
    document = StatusDocument(NOW, (held,))
    assert StatusDocument.parse(document.to_json()) == document  # additive fields round-trip
    trusted = verification(document, NOW, 2 * HOUR)
    assert trusted.verified == frozenset()
    assert "no successful check for 10800s (Throttling)" in trusted.reason_for("docker.io")
    legacy = json.loads(document.to_json())
    del legacy["upstreams"]["docker.io"]["heldSince"]  # a document from the previous version reads the same
    assert StatusDocument.parse(json.dumps(legacy)).upstreams[0].verified


@pytest.mark.parametrize(
    ("rules", "detail"),
    [
        (
            RewriteRules(registry=OTHER_REGISTRY, upstreams={"quay.io": "quay"}),
            f"the upstream status verified docker.io for the registry {REGISTRY}, not {OTHER_REGISTRY}: "
            f"waiting for the controller to verify docker.io through {OTHER_REGISTRY}/docker-hub",
        ),
        (
            RewriteRules(registry=REGISTRY, docker_hub_prefix="hub", upstreams={"quay.io": "quay"}),
            f"the upstream status verified docker.io under the prefix docker-hub, not hub: "
            f"waiting for the controller to verify docker.io through {REGISTRY}/hub",
        ),
    ],
    ids=["registry changed", "prefix changed"],
)
def test_a_verification_made_for_another_target_is_not_trusted(rules: RewriteRules, detail: str) -> None:
    """After `helm upgrade` changes the registry or a prefix, the old controller's verification does not count."""
    old_target = document(docker_io=True, quay_io=True).to_json()
    decision = decide("nginx", rules, trusted_by(rules, old_target))
    assert (decision.reason, decision.detail) == (Reason.UPSTREAM_UNVERIFIED, detail)
    assert decide("quay.io/org/app", rules, trusted_by(rules, old_target)).reason is (
        Reason.UPSTREAM_UNVERIFIED if rules.registry != REGISTRY else Reason.REWRITTEN
    ), "an upstream whose own target did not change stays trusted"


def test_the_registry_is_recorded_in_every_entry() -> None:
    entry = json.loads(document(docker_io=True).to_json())["upstreams"]["docker.io"]
    assert (entry["registry"], entry["prefix"]) == (REGISTRY, "docker-hub")


class TestRollingUpgradeFrom_0_1_0:
    """Old (0.1.0) and new webhooks and controllers run side by side during a rolling upgrade."""

    def test_an_old_webhook_reads_a_new_controllers_document(self) -> None:
        new = document(docker_io=True, quay_io=False).to_json()
        old_view = release_0_1_0.verification(release_0_1_0.StatusDocument.parse(new), NOW, HOUR)
        assert old_view.verified == {"docker.io"}
        assert old_view.reason_for("quay.io") == "quay_io is broken: fix it"
        assert json.loads(new)["version"] == release_0_1_0.VERSION == 1

    def test_a_new_webhook_reads_an_old_controllers_document_without_trusting_it(self) -> None:
        old = release_0_1_0.StatusDocument(
            NOW, (release_0_1_0.UpstreamStatus("docker.io", "docker-hub", True, "", NOW),)
        ).to_json()
        decision = decide("nginx", RULES, trusted_by(RULES, old))
        assert decision.reason is Reason.UPSTREAM_UNVERIFIED
        assert decision.detail.startswith(
            "the upstream status does not name the registry it verified (written by an older controller)"
        )
        # ...until the new controller, which verifies at start, publishes its own.
        new = document(docker_io=True, quay_io=True).to_json()
        assert decide("nginx", RULES, trusted_by(RULES, new)).reason is Reason.REWRITTEN

    def test_new_documents_round_trip_through_both_versions(self) -> None:
        new = document(docker_io=True, quay_io=False)
        reread = release_0_1_0.StatusDocument.parse(new.to_json())
        assert [(s.upstream, s.prefix, s.verified) for s in reread.upstreams] == [
            (s.upstream, s.prefix, s.verified) for s in new.upstreams
        ]
        assert StatusDocument.parse(new.to_json()) == new


def test_the_status_file_trusts_only_its_own_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import webhook.admission.statusfile

    monkeypatch.setattr(webhook.admission.statusfile, "CHECK_INTERVAL_SECONDS", 0)
    path = tmp_path / "status.json"
    now = datetime.datetime.now(datetime.UTC)
    path.write_text(document(now, registry=OTHER_REGISTRY, docker_io=True).to_json())
    status = StatusFile(path, HOUR, Target(REGISTRY, {"docker.io": "docker-hub"}))
    assert status.current().verified == frozenset()
    assert f"not {REGISTRY}" in status.current().reason_for("docker.io")
    path.write_text(document(now, docker_io=True).to_json())
    assert status.current().verified == {"docker.io"}


def test_every_entry_names_the_registry_and_a_hold_is_for_the_same_registry() -> None:
    verified = advance(None, Check("docker.io", "docker-hub"), NOW, REGISTRY)
    assert verified.registry == REGISTRY
    throttled = Check("docker.io", "docker-hub", "Throttling", transient=True)
    assert advance(verified, throttled, NOW + HALF, REGISTRY).verified
    assert not advance(verified, throttled, NOW + HALF, OTHER_REGISTRY).verified


def test_a_verification_is_trusted_only_for_the_pull_secret_mode_it_was_made_in() -> None:
    """Switching modes never rides on the other mode's verification, either way."""
    in_secret_mode = document(docker_io=True).to_json()
    node_role = verification(StatusDocument.parse(in_secret_mode), NOW, HOUR, target=RULES.status_target("node-role"))
    decision = decide("nginx", RULES, node_role)
    assert (decision.reason, decision.detail) == (
        Reason.UPSTREAM_UNVERIFIED,
        "the upstream status verified docker.io in pull-secret mode secret, not node-role: "
        "waiting for the controller to verify it with the nodes' own role",
    )
    by_the_nodes = StatusDocument(
        NOW, (advance(None, Check("docker.io", "docker-hub"), NOW, REGISTRY, "node-role"),)
    ).to_json()
    assert json.loads(by_the_nodes)["upstreams"]["docker.io"]["pullSecretMode"] == "node-role"
    assert decide("nginx", RULES, node_role).reason is Reason.UPSTREAM_UNVERIFIED
    trusted = verification(StatusDocument.parse(by_the_nodes), NOW, HOUR, target=RULES.status_target("node-role"))
    assert decide("nginx", RULES, trusted).reason is Reason.REWRITTEN
    back = decide("nginx", RULES, trusted_by(RULES, by_the_nodes))
    assert back.reason is Reason.UPSTREAM_UNVERIFIED
    assert back.detail.endswith("waiting for the controller to put the pull secret in every namespace and verify it")


def test_a_document_from_before_the_mode_existed_counts_as_secret_mode() -> None:
    old = json.loads(document(docker_io=True).to_json())
    del old["upstreams"]["docker.io"]["pullSecretMode"]
    assert decide("nginx", RULES, trusted_by(RULES, json.dumps(old))).reason is Reason.REWRITTEN


def test_a_hold_is_for_the_same_pull_secret_mode() -> None:
    verified = advance(None, Check("docker.io", "docker-hub"), NOW, REGISTRY, "secret")
    throttled = Check("docker.io", "docker-hub", "Throttling", transient=True)
    assert advance(verified, throttled, NOW + HALF, REGISTRY, "secret").verified
    assert not advance(verified, throttled, NOW + HALF, REGISTRY, "node-role").verified
