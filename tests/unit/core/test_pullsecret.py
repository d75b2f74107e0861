import base64
import datetime
import json
from typing import Any

from webhook.core import pullsecret
from webhook.core.token import Token

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
TOKEN = Token("AWS", "s3cr3t", NOW + datetime.timedelta(hours=12), NOW)
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
OTHER_REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
INSTANCE = "ecr-pullthrough.us"
OURS = {"app.kubernetes.io/managed-by": "ecr-pullthrough", "ecr-pullthrough/instance": INSTANCE}


def test_the_desired_secret_is_a_docker_config_for_the_registry() -> None:
    secret = pullsecret.desired("team", "ecr-pullthrough", REGISTRY, TOKEN, INSTANCE)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["labels"] == OURS
    assert pullsecret.expires_at(secret) == TOKEN.expires_at
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    entry = config["auths"][REGISTRY]
    assert (entry["username"], entry["password"]) == ("AWS", "s3cr3t")
    assert base64.b64decode(entry["auth"]) == b"AWS:s3cr3t"
    assert pullsecret.ownership(secret, INSTANCE, REGISTRY) == "ours"


def test_in_sync_ignores_what_others_add_and_sees_what_we_set() -> None:
    wanted = pullsecret.desired("team", "ecr-pullthrough", REGISTRY, TOKEN, INSTANCE)
    actual = json.loads(json.dumps(wanted))
    actual["metadata"]["labels"]["extra"] = "x"
    actual["metadata"]["resourceVersion"] = "7"
    assert pullsecret.in_sync(actual, wanted)
    actual["data"][".dockerconfigjson"] = "e30="
    assert not pullsecret.in_sync(actual, wanted)
    newer = pullsecret.desired("team", "ecr-pullthrough", REGISTRY, Token("AWS", "new", NOW, NOW), INSTANCE)
    assert not pullsecret.in_sync(wanted, newer)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def test_the_patch_sets_only_ours_and_is_a_compare_and_swap() -> None:
    wanted = pullsecret.desired("team", "ecr-pullthrough", REGISTRY, TOKEN, INSTANCE)
    actual = {
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": "ecr-pullthrough",
            "resourceVersion": "9",
            "labels": {"x": "y"},
            "ownerReferences": [{"name": "kept"}],
        },
        "data": {},
    }
    patch = pullsecret.patch(pullsecret.slim(actual), wanted)
    assert patch["metadata"]["resourceVersion"] == "9"
    merged = merge(actual, patch)
    assert merged["metadata"]["labels"] == {"x": "y", **OURS}
    assert merged["metadata"]["ownerReferences"] == [{"name": "kept"}]
    assert pullsecret.in_sync(merged, wanted)
    assert pullsecret.in_sync(pullsecret.slim(merged), wanted)


def test_the_slim_copy_keeps_what_reconcile_needs_and_no_token() -> None:
    secret = pullsecret.desired("team", "ecr-pullthrough", REGISTRY, TOKEN, INSTANCE)
    secret["metadata"]["managedFields"] = [{"manager": "x" * 5000}]
    small = pullsecret.slim(secret)
    assert TOKEN.password not in json.dumps(small)
    assert len(json.dumps(small)) < 600
    assert pullsecret.slim(small) == small
    assert pullsecret.ownership(small, INSTANCE, REGISTRY) == "ours"
    assert pullsecret.registries(small) == {REGISTRY}
    assert pullsecret.expires_at(small) == TOKEN.expires_at
    wrong = {**small, "type": "Opaque"}
    plan = pullsecret.plan(
        namespace="team",
        name="ecr-pullthrough",
        registry=REGISTRY,
        instance=INSTANCE,
        wanted=True,
        token=TOKEN,
        actual=wrong,
    )
    assert plan.action == "wrong-type"


def test_a_secret_without_our_label_is_not_ours() -> None:
    assert pullsecret.ownership({"metadata": {"name": "ecr-pullthrough"}}, INSTANCE, REGISTRY) == "foreign"
    assert pullsecret.expires_at({"metadata": {"annotations": {pullsecret.EXPIRES_ANNOTATION: "garbage"}}}) is None


def test_the_refresh_is_half_way_with_a_floor() -> None:
    floor = datetime.timedelta(minutes=1)
    assert TOKEN.refresh_at(floor) == NOW + datetime.timedelta(hours=6)
    expired = Token("AWS", "x", NOW - datetime.timedelta(days=1), NOW)
    assert expired.refresh_at(floor) == NOW + floor
    assert "s3cr3t" not in repr(TOKEN)


def token(password: str = "p", hours: float = 12) -> Token:
    return Token("AWS", password, NOW + datetime.timedelta(hours=hours), NOW)


def plan_for(actual: dict[str, object] | None, *, wanted: bool = True, held: Token | None = None) -> pullsecret.Plan:
    return pullsecret.plan(
        namespace="ns", name="s", registry=REGISTRY, instance=INSTANCE, wanted=wanted, token=held, actual=actual
    )


def test_the_reconcile_decision() -> None:
    current = token()
    secret = pullsecret.desired("ns", "s", REGISTRY, current, INSTANCE)
    assert plan_for(None, held=None).action == "not-wanted"
    assert plan_for(None, wanted=False, held=current).action == "not-wanted"
    created = plan_for(None, held=current)
    assert (created.action, created.secret) == ("create", secret)
    assert plan_for(secret, held=current).action == "in-sync"
    assert plan_for({**secret, "metadata": {"name": "s"}}, held=current).action == "foreign"
    newer = pullsecret.desired("ns", "s", REGISTRY, token("newer", hours=20), INSTANCE)
    assert plan_for(newer, held=current).action == "newer-kept"
    older = {
        **pullsecret.desired("ns", "s", REGISTRY, token("old", hours=1), INSTANCE),
        "metadata": {**secret["metadata"]},
    }
    older["metadata"]["annotations"] = {pullsecret.EXPIRES_ANNOTATION: (NOW + datetime.timedelta(hours=1)).isoformat()}
    updated = plan_for(older, held=current)
    assert updated.action == "update"
    assert updated.secret is not None
    assert updated.secret["data"] == secret["data"]


def test_a_token_is_adopted_only_from_a_valid_secret_of_ours() -> None:
    held = token("adopt-me", hours=10)
    secret = pullsecret.desired("home", "s", REGISTRY, held, INSTANCE)
    adopted = pullsecret.token_from(secret, REGISTRY, INSTANCE, NOW)
    assert adopted is not None
    assert (adopted.username, adopted.password, adopted.expires_at) == ("AWS", "adopt-me", held.expires_at)
    assert adopted.fetched_at == held.expires_at - pullsecret.TOKEN_LIFETIME
    assert adopted.endpoint == f"https://{REGISTRY}"
    assert pullsecret.token_from(secret, REGISTRY, INSTANCE, held.expires_at) is None  # expired
    assert pullsecret.token_from(secret, "999999999999.dkr.ecr.eu-west-1.amazonaws.com", INSTANCE, NOW) is None
    assert pullsecret.token_from({**secret, "metadata": {"name": "s"}}, REGISTRY, INSTANCE, NOW) is None  # not ours
    assert (
        pullsecret.token_from({**secret, "data": {pullsecret.DATA_KEY: "not base64!"}}, REGISTRY, INSTANCE, NOW) is None
    )
    broken = base64.b64encode(json.dumps({"auths": {REGISTRY: {"username": "AWS"}}}).encode()).decode()
    assert pullsecret.token_from({**secret, "data": {pullsecret.DATA_KEY: broken}}, REGISTRY, INSTANCE, NOW) is None
    assert pullsecret.token_from(None, REGISTRY, INSTANCE, NOW) is None


def legacy(registry: str = REGISTRY, password: str = "old") -> dict[str, Any]:
    """A pull Secret as chart 0.1.0's controller wrote it: managed-by, no instance label."""
    secret = pullsecret.desired("ns", "s", registry, token(password, hours=1), "unused")
    secret["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "ecr-pullthrough"}
    return secret


def test_a_secret_of_another_release_is_never_written() -> None:
    """Two releases with one Secret name (two regions): the second leaves the first one's Secret alone."""
    theirs = pullsecret.desired("ns", "s", OTHER_REGISTRY, token("theirs", hours=1), "ecr-pullthrough.eu")
    assert pullsecret.ownership(theirs, INSTANCE, REGISTRY) == "other-instance"
    assert plan_for(theirs, held=token()).action == "other-instance"
    assert pullsecret.owner_of(theirs) == "ecr-pullthrough/instance=ecr-pullthrough.eu"
    same_registry = pullsecret.desired("ns", "s", REGISTRY, token("theirs", hours=1), "ecr-pullthrough.other")
    assert plan_for(same_registry, held=token()).action == "other-instance", "even for the same registry"
    assert pullsecret.token_from(same_registry, REGISTRY, INSTANCE, NOW) is None


def test_a_secret_of_0_1_0_for_our_registry_is_adopted() -> None:
    old = legacy()
    assert pullsecret.ownership(old, INSTANCE, REGISTRY) == "adoptable"
    adopted = plan_for(old, held=token())
    assert adopted.action == "update"
    assert adopted.secret is not None
    assert adopted.secret["metadata"]["labels"] == OURS
    assert pullsecret.token_from(old, REGISTRY, INSTANCE, NOW) is not None


def test_a_secret_of_0_1_0_for_another_registry_is_another_installations() -> None:
    old = legacy(OTHER_REGISTRY)
    assert plan_for(old, held=token()).action == "other-instance"
    assert pullsecret.owner_of(old) == (
        "an ecr-pullthrough 0.1.0 installation (no ecr-pullthrough/instance label) for " + OTHER_REGISTRY
    )
