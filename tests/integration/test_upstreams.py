"""Verifying upstreams against the fake ECR endpoint (its API and its registry), through boto3 and HTTP."""

import datetime
import os

from tests.fake_ecr import FakeEcr
from tests.strategies import REGISTRY
from webhook.controller.ecr import TokenSource, ecr_client
from webhook.controller.upstreams import Verifier, configured_upstreams
from webhook.core.token import Token
from webhook.core.upstream_status import Check

ACCOUNT = "123456789012"


def verify(
    prefix: str = "docker-hub", upstreams: dict[str, str] | None = None, probes: dict[str, str] | None = None
) -> dict[str, tuple[bool, str]]:
    """{upstream: (verified, reason)} of one verification."""
    return {c.upstream: (c.problem is None, c.problem or "") for c in checks(prefix, upstreams, probes)}


def checks(
    prefix: str = "docker-hub",
    upstreams: dict[str, str] | None = None,
    probes: dict[str, str] | None = None,
    *,
    token: Token | None = None,
    now: datetime.datetime | None = None,
    url: str | None = None,
) -> list[Check]:
    client = ecr_client("us-east-1", connect_timeout=1, read_timeout=2, max_attempts=1)
    held = token or TokenSource(client).fetch()
    verifier = Verifier(
        client,
        configured_upstreams(prefix, upstreams or {}, probes or {}),
        lambda: held,
        registry=REGISTRY,
        registry_id=ACCOUNT,
        # The fake's registry API (the token's proxyEndpoint names the real ECR host, as ECR's does).
        registry_url=url or os.environ["ECR_PULLTHROUGH_REGISTRY_API_URL"],
        http_timeout=2,
    )
    return verifier.verify(now or datetime.datetime.now(datetime.UTC))


def test_a_healthy_account_verifies_every_upstream(fake: FakeEcr) -> None:
    result = verify(upstreams={"ghcr.io": "github", "quay.io": "quay"}, probes={"ghcr.io": "org/tiny:1"})
    assert result == {"docker.io": (True, ""), "ghcr.io": (True, ""), "quay.io": (True, "")}
    assert "/v2/docker-hub/library/hello-world/manifests/latest" in fake.manifests
    assert "/v2/github/org/tiny/manifests/1" in fake.manifests


def test_no_rule(fake: FakeEcr) -> None:
    del fake.rules["github"]
    verified, reason = verify(upstreams={"ghcr.io": "github"})["ghcr.io"]
    assert not verified
    assert reason.startswith("no pull-through cache rule for ghcr.io: create one with `aws ecr create-pull-through")


def test_a_rule_under_another_prefix_is_named(fake: FakeEcr) -> None:
    verified, reason = verify(prefix="dockerhub")["docker.io"]
    assert not verified
    assert "the rule for registry-1.docker.io has the prefix docker-hub" in reason


def test_a_prefix_pointing_elsewhere(fake: FakeEcr) -> None:
    verified, reason = verify(upstreams={"ghcr.io": "quay"})["ghcr.io"]
    assert not verified
    assert "points at quay.io, not ghcr.io" in reason


def test_an_invalid_credential(fake: FakeEcr) -> None:
    fake.invalid_credentials.add("docker-hub")
    verified, reason = verify()["docker.io"]
    assert not verified
    assert "upstream credential of the rule docker-hub is not valid (Invalid username or password" in reason
    assert "ecr-pullthroughcache/hub" in reason


def test_import_permission_denied_on_the_manifest_request(fake: FakeEcr) -> None:
    fake.import_denied.add("quay")
    result = verify(upstreams={"quay.io": "quay"})
    assert result["docker.io"] == (True, ""), "only the broken upstream is unverified"
    verified, reason = result["quay.io"]
    assert not verified
    assert "refused (HTTP 403)" in reason
    assert "ecr:BatchImportUpstreamImage" in reason


def test_ecr_unreachable(fake: FakeEcr) -> None:
    token = TokenSource(ecr_client("us-east-1", connect_timeout=1, read_timeout=2, max_attempts=1)).fetch()
    fake.stop()
    [check] = checks(token=token)
    assert check.problem is not None
    assert "DescribePullThroughCacheRules failed (Unreachable" in check.problem
    assert check.transient, "an unreachable endpoint says nothing about the setup"


def test_each_failure_is_definitive_or_transient(fake: FakeEcr) -> None:
    fake.import_denied.add("quay")
    del fake.rules["github"]
    kinds = {c.upstream: c.transient for c in checks(upstreams={"quay.io": "quay", "ghcr.io": "github"}) if c.problem}
    assert kinds == {"quay.io": False, "ghcr.io": False}
    fake.mode = "throttle"
    token = Token("AWS", fake.password(1), datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
                  datetime.datetime.now(datetime.UTC), fake.url)  # fmt: skip
    [throttled] = checks(token=token)
    assert throttled.problem is not None
    assert "ThrottlingException" in throttled.problem
    assert throttled.transient
    fake.mode = "deny"
    [denied] = checks(token=token)
    assert denied.problem is not None
    assert "AccessDeniedException" in denied.problem
    assert not denied.transient


def test_every_call_names_the_configured_registry(fake: FakeEcr) -> None:
    checks()
    assert fake.registry_ids == {ACCOUNT}


def test_an_expired_token_fails_every_upstream_even_without_a_probe(fake: FakeEcr) -> None:
    """Upstreams without a probe image were verified by their rule alone, after the token had expired."""
    fetched = datetime.datetime.now(datetime.UTC)
    token = Token("AWS", "p", fetched + datetime.timedelta(hours=12), fetched, fake.url)
    later = fetched + datetime.timedelta(hours=13)
    found = checks(upstreams={"ghcr.io": "github"}, token=token, now=later)
    assert [c.upstream for c in found] == ["docker.io", "ghcr.io"]
    assert all(c.problem is not None and "the ECR token expired" in c.problem and not c.transient for c in found)


def test_recovery(fake: FakeEcr) -> None:
    fake.import_denied.add("docker-hub")
    assert not verify()["docker.io"][0]
    fake.import_denied.clear()
    assert verify()["docker.io"] == (True, "")
