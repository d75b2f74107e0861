import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import OTHER_HOSTS, REGISTRY, any_images, image_references, paths, tags
from webhook.core import images
from webhook.core.rewrite import Reason, RewriteRules, decide

RULES = RewriteRules(registry=REGISTRY, upstreams={"quay.io": "quay", "ghcr.io": "github"})
DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("nginx:1.27", f"{REGISTRY}/docker-hub/library/nginx:1.27"),
        ("nginx", f"{REGISTRY}/docker-hub/library/nginx"),
        ("library/nginx:1.27", f"{REGISTRY}/docker-hub/library/nginx:1.27"),
        ("docker.io/nginx:1.27", f"{REGISTRY}/docker-hub/library/nginx:1.27"),
        ("index.docker.io/library/nginx", f"{REGISTRY}/docker-hub/library/nginx"),
        ("registry-1.docker.io/nginx:1", f"{REGISTRY}/docker-hub/library/nginx:1"),
        ("bitnami/redis:7.2", f"{REGISTRY}/docker-hub/bitnami/redis:7.2"),
        ("foo:5000", f"{REGISTRY}/docker-hub/library/foo:5000"),
        ("quay.io/prometheus/node-exporter:v1.8.2", f"{REGISTRY}/quay/prometheus/node-exporter:v1.8.2"),
        ("ghcr.io/org/app:TAG", f"{REGISTRY}/github/org/app:TAG"),
    ],
)
def test_rewritten(image: str, expected: str) -> None:
    decision = decide(image, RULES)
    assert (decision.image, decision.reason) == (expected, Reason.REWRITTEN)
    assert decision.changed


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("registry.k8s.io/pause:3.10", Reason.OTHER_REGISTRY),
        ("localhost:5000/app", Reason.OTHER_REGISTRY),
        ("[::1]:5000/app", Reason.OTHER_REGISTRY),
        # hosts compare exactly, as containerd maps them: an upper-case Hub or upstream host is another registry
        ("DOCKER.Io/nginx", Reason.OTHER_REGISTRY),
        ("DOCKER.IO/library/nginx", Reason.OTHER_REGISTRY),
        ("GHCR.io/org/app", Reason.OTHER_REGISTRY),
        ("a_b.com/app", Reason.OTHER_REGISTRY),
        # an ECR host in any case is ECR (DNS ignores case): never rewritten, and said so
        ("123456789012.DKR.ECR.US-EAST-1.AMAZONAWS.COM/app:1", Reason.ALREADY_ECR),
        ("nginx\n", Reason.INVALID_REFERENCE),
        ("a-" * 15000 + "a.com:/x", Reason.INVALID_REFERENCE),
        (f"{REGISTRY}/docker-hub/library/nginx:1.27", Reason.ALREADY_ECR),
        ("999999999999.dkr.ecr.eu-west-1.amazonaws.com/team/app:1", Reason.ALREADY_ECR),
        ("111111111111.dkr.ecr.cn-north-1.amazonaws.com.cn/app", Reason.ALREADY_ECR),
        ("111111111111.dkr.ecr-fips.us-east-1.amazonaws.com/app", Reason.ALREADY_ECR),
        ("111111111111.dkr-ecr.us-east-1.on.aws/app", Reason.ALREADY_ECR),
        ("Nginx:1", Reason.INVALID_REFERENCE),
        ("", Reason.INVALID_REFERENCE),
        (f"nginx@{DIGEST}", Reason.DIGEST_PINNED),
        (f"nginx:1.27@{DIGEST}", Reason.DIGEST_PINNED),
        ("a/" * 125 + "a", Reason.PATH_TOO_LONG),
    ],
)
def test_left_alone_with_a_reason(image: str, reason: Reason) -> None:
    decision = decide(image, RULES)
    assert (decision.image, decision.reason) == (image, reason)
    assert not decision.changed


def test_digest_policy_rewrite_keeps_tag_and_digest() -> None:
    rules = RewriteRules(registry=REGISTRY, digest_policy="rewrite")
    decision = decide(f"nginx:1.27@{DIGEST}", rules)
    assert decision.image == f"{REGISTRY}/docker-hub/library/nginx:1.27@{DIGEST}"


def test_excluded_images_match_the_normalised_name() -> None:
    rules = RewriteRules(registry=REGISTRY, exclude_images=("docker.io/library/busybox*", "docker.io/internal/*"))
    assert decide("busybox:1.36", rules).reason is Reason.EXCLUDED_IMAGE
    assert decide("docker.io/internal/tool", rules).reason is Reason.EXCLUDED_IMAGE
    assert decide("nginx", rules).reason is Reason.REWRITTEN
    # every Docker Hub host name is matched as docker.io; an upper-case one is another registry
    assert decide("registry-1.docker.io/busybox", rules).reason is Reason.EXCLUDED_IMAGE
    assert decide("index.docker.io/library/busybox:1", rules).reason is Reason.EXCLUDED_IMAGE
    assert decide("DOCKER.IO/library/busybox", rules).reason is Reason.OTHER_REGISTRY


def test_a_custom_prefix_is_used() -> None:
    decision = decide("nginx", RewriteRules(registry=REGISTRY, docker_hub_prefix="hub/mirror"))
    assert decision.image == f"{REGISTRY}/hub/mirror/library/nginx"


def test_the_path_limit_counts_the_prefix() -> None:
    too_long, fits = "a/" * 122 + "a", "a/" * 121 + "ab"
    assert (len("docker-hub/" + too_long), len("docker-hub/" + fits)) == (256, 255)
    assert decide(too_long, RULES).reason is Reason.PATH_TOO_LONG
    assert decide(fits, RULES).reason is Reason.REWRITTEN


@given(any_images)
def test_rewriting_twice_equals_rewriting_once(image: str) -> None:
    once = decide(image, RULES)
    twice = decide(once.image, RULES)
    assert twice.image == once.image
    if once.changed:
        assert twice.reason is Reason.ALREADY_ECR


@given(image_references())
def test_every_output_is_valid_and_keeps_tag_and_digest(image: str) -> None:
    decision = decide(image, RULES)
    if decision.reason is Reason.INVALID_REFERENCE:
        return
    before, after = images.parse(image), images.parse(decision.image)
    assert (after.tag, after.digest) == (before.tag, before.digest)
    if decision.changed:
        assert after.domain == REGISTRY
        assert after.path.endswith(before.path)


@given(st.sampled_from([h for h in OTHER_HOSTS if h not in RULES.upstreams]), paths, st.none() | tags)
def test_other_registries_never_change(host: str, path: str, tag: str | None) -> None:
    image = f"{host}/{path}" + (f":{tag}" if tag else "")
    decision = decide(image, RULES)
    assert decision.image == image
    assert decision.reason is Reason.OTHER_REGISTRY


@given(st.text(max_size=60))
def test_any_string_gets_a_decision_never_an_exception(image: str) -> None:
    decision = decide(image, RULES)
    assert decision.reason in Reason


def test_the_decision_cache_answers_as_decide_is_bounded_and_forgets_on_a_new_snapshot() -> None:
    import datetime

    from webhook.core.rewrite import DecisionCache
    from webhook.core.upstream_status import Verification

    rules = RewriteRules(registry=REGISTRY)
    cache = DecisionCache(rules, maxsize=100)
    verified = Verification(frozenset({"docker.io"}), {})
    for i in range(1_000):
        image = f"team/app{i}:1"
        assert cache.decide(image, verified) == decide(image, rules, verified)
    assert len(cache._state[1]) <= 100
    # A new snapshot, even if it only changes a reason, is a new set of facts: nothing carries over.
    unknown = Verification(frozenset(), {}, f"stale at {datetime.datetime.now(datetime.UTC)}")
    assert cache.decide("nginx", unknown) == decide("nginx", rules, unknown)
    assert cache.decide("nginx", unknown).reason.value == "upstream-unverified"
    assert len(cache._state[1]) == 1
    assert cache.decide("nginx", Verification(frozenset({"docker.io"}), {})).reason.value == "rewritten"
