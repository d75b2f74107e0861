"""`excludeNamespaceSelector` reaches the webhook: the chart's rendered configuration, the real API server.

A namespace the controller gives no pull Secret must get no rewrite either, or its
pods would name a Secret that does not exist. The chart renders one webhook entry per
requirement, with disjoint selectors, so that each pod is still admitted at most once.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.chart import CHART
from tests.e2e.controlplane import ControlPlane
from tests.e2e.fixtures_webhook import create_pod, images, pod, registered_webhook
from tests.strategies import REGISTRY
from webhook.core.selectors import parse_selector

SELECTOR = "team=legacy,env!=prod"  # the README's own example: an AND of two requirements
REWRITTEN = f"{REGISTRY}/docker-hub/library/nginx:1.27"
NAMESPACES: dict[str, dict[str, str]] = {
    "legacy": {"team": "legacy"},  # env absent: env!=prod holds
    "legacy-dev": {"team": "legacy", "env": "dev"},
    "legacy-prod": {"team": "legacy", "env": "prod"},
    "web": {"team": "web"},
    "web-prod": {"team": "web", "env": "prod"},
    "unlabelled": {},
}


def test_namespaces_the_controller_excludes_get_no_rewrite_and_the_others_one_admission(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    excluded_by_controller = parse_selector(SELECTOR)
    with (
        registered_webhook(
            control_plane, tmp_path, target=f"selector-{uuid.uuid4().hex[:6]}", exclude_namespace_selector=SELECTOR
        ) as webhook,
        control_plane.api_client() as api,
    ):
        assert len(webhook.configuration["webhooks"]) == 2, "one entry per requirement"
        outcomes = {}
        for kind, labels in NAMESPACES.items():
            namespace = webhook.namespace(kind, labels)
            name = f"p-{kind}"
            stored = images(create_pod(api, namespace, pod(name, {"c": "nginx:1.27"})))["c"]
            admitted = len(webhook.admissions(namespace, name))
            outcomes[kind] = (stored, admitted)
            if excluded_by_controller(labels):
                assert (stored, admitted) == ("nginx:1.27", 0), f"{kind}: excluded, never sent to the webhook"
            else:
                assert (stored, admitted) == (REWRITTEN, 1), f"{kind}: rewritten, admitted exactly once"
        assert [kind for kind, (image, _) in outcomes.items() if image == "nginx:1.27"] == ["legacy", "legacy-dev"]


@pytest.mark.parametrize(
    ("selector", "problem"),
    [("team in (a,b)", '"team in (a"'), ("=x", '"=x"'), ("a=b=c", '"a=b=c"'), ("!a=b", '"!a=b"')],
)
def test_a_selector_the_controller_cannot_read_stops_the_render(helm: Path, selector: str, problem: str) -> None:
    result = subprocess.run(
        [str(helm), "template", "x", str(CHART), "--set", f"registry={REGISTRY}", "--set-string",
         "excludeNamespaceSelector=" + selector.replace(",", "\\,")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"excludeNamespaceSelector: {problem} is not an equality-based label selector requirement" in result.stderr
    with pytest.raises(ValueError, match="not an equality-based label selector requirement"):
        parse_selector(selector)
