"""Drill: 10,000 derandomized hypothesis AdmissionReviews against the real webhook process over TLS.

The reviews (tests/review_strategies.py): random pod shapes; missing, null and wrong-typed
fields at every level of the review, the pod and its containers; huge and Unicode strings;
thousands of containers; duplicate container names; arbitrary bytes. Never a 5xx, never a hang
(each request has 30 s); every 200 is a valid AdmissionReview whose patch applies to the object
and changes nothing but the decided images, our pull secret and our annotation.

CI time budget: 2 minutes on the shared 2-core development machine (most of it hypothesis generating
and the test checking each patch);
the examples are derandomized, so every run sends the same 10,000.
Before the fixes this drill found: a 500 for `metadata` of the wrong type (the error path
itself failed), and patches that did not apply (null `metadata`, `imagePullSecrets` an object).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.drills import check_answer
from tests.review_strategies import SECRET, bodies
from tests.strategies import REGISTRY
from tests.support import WebhookProcess, webhook_process
from webhook.core.rewrite import RewriteRules

REVIEWS = 10_000
RULES = RewriteRules(registry=REGISTRY)


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    with webhook_process(tmp_path_factory.mktemp("bad-input"), "--registry", REGISTRY, "--log-level", "warning") as w:
        yield w


def test_ten_thousand_bad_reviews_never_get_a_5xx_a_hang_or_a_wrong_patch(webhook: WebhookProcess) -> None:
    outcomes: collections.Counter[str] = collections.Counter()
    with httpx.Client(base_url=webhook.url, verify=webhook.ssl_context(), timeout=30) as client:

        @settings(
            max_examples=REVIEWS,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(bodies())
        def drill(case: tuple[dict[str, Any] | None, bytes]) -> None:
            review, body = case
            answer = client.post("/mutate", content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code in (200, 400, 413), (answer.status_code, answer.text[:500], body[:500])
            if answer.status_code != 200:
                assert "error" in answer.json()
                outcomes[str(answer.status_code)] += 1
                return
            assert review is not None, body[:500]
            outcomes[check_answer(review, answer.json(), RULES, SECRET)] += 1

        drill()
    assert sum(outcomes.values()) == REVIEWS
    # The drill reached every outcome, the patched one most of all.
    assert min(outcomes["patched"], outcomes["allowed"], outcomes["400"]) >= 500, outcomes
    assert webhook.process.poll() is None
