"""Verifying upstreams against the fake ECR endpoint (its API and its registry), through boto3 and HTTP."""

from tests.fake_ecr import FakeEcr
from tests.strategies import REGISTRY
from webhook.controller.ecr import TokenSource, ecr_client
from webhook.controller.upstreams import Verifier, configured_upstreams
from webhook.core.token import Token
from webhook.core.upstream_status import StatusDocument


def verify(
    prefix: str = "docker-hub", upstreams: dict[str, str] | None = None, probes: dict[str, str] | None = None
) -> dict[str, tuple[bool, str]]:
    client = ecr_client("us-east-1", connect_timeout=1, read_timeout=2, max_attempts=1)
    token: Token | None = None

    def current() -> Token | None:
        nonlocal token
        token = token or TokenSource(client).fetch()
        return token

    verifier = Verifier(
        client, configured_upstreams(prefix, upstreams or {}, probes or {}), current, registry=REGISTRY, http_timeout=2
    )
    document: StatusDocument = verifier.verify()
    assert {s.registry for s in document.upstreams} == {REGISTRY}, "each entry names the registry it verified"
    return {s.upstream: (s.verified, s.reason) for s in document.upstreams}


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
    fake.stop()
    verified, reason = verify()["docker.io"]
    assert not verified
    assert "DescribePullThroughCacheRules failed (Unreachable" in reason


def test_recovery(fake: FakeEcr) -> None:
    fake.import_denied.add("docker-hub")
    assert not verify()["docker.io"][0]
    fake.import_denied.clear()
    assert verify()["docker.io"] == (True, "")
