import pytest

from webhook.core.selectors import parse_selector


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("", {"a": "b"}, False),
        ("team=legacy", {"team": "legacy"}, True),
        ("team==legacy", {"team": "legacy"}, True),
        ("team=legacy", {"team": "web"}, False),
        ("env!=prod", {}, True),
        ("env!=prod", {"env": "prod"}, False),
        ("skip", {"skip": ""}, True),
        ("!skip", {"skip": "x"}, False),
        ("team=legacy, !keep", {"team": "legacy"}, True),
        ("team=legacy,!keep", {"team": "legacy", "keep": "1"}, False),
        ("example.com/opt-out=true", {"example.com/opt-out": "true"}, True),
    ],
)
def test_equality_based_selectors(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(selector)(labels) is matches


@pytest.mark.parametrize("selector", ["a in (b)", "!a=b", "=b", "a=b c"])
def test_unsupported_selectors_are_refused(selector: str) -> None:
    with pytest.raises(ValueError, match="label selector"):
        parse_selector(selector)
