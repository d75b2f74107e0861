"""One pathological pod must not hold up the admissions behind it.

Pods with 30 KB, 62 KB and 200 KB invalid image strings, and a 1.6 MB pod of 2,000 near-miss images, are
sent to the real webhook process while ordinary reviews flow on another connection. Before the
linear parser, the 62 KB image (a body small enough to be decided on the event loop) stalled it
for 0.6 s, and the 200 KB one took 20 s of CPU.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.strategies import REGISTRY
from tests.support import WebhookProcess, webhook_process
from webhook.admission.review import pod_review
from webhook.core import images

# Generous: an ordinary review takes about a millisecond; the tight figures belong to `make bench`.
BOUND_SECONDS = 0.25


def review_of(*images_: str) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images_)]},
    }
    return pod_review(pod, namespace="default", uid=str(uuid.uuid4()))


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    with webhook_process(tmp_path_factory.mktemp("stall"), "--registry", REGISTRY) as running:
        yield running


def test_pathological_pods_do_not_delay_ordinary_admissions(webhook: WebhookProcess) -> None:
    near_miss = ("a-" * 400)[: images.MAX_REFERENCE_LENGTH - 1] + "A"
    pathological = [
        review_of("a-" * 15_000 + "a.com:/x"),  # 30 KB
        review_of("a-" * 31_000 + "a.com:/x"),  # 62 KB: still decided on the event loop (OFF_LOOP_BODY_BYTES)
        review_of("a-" * 100_000 + "a.com:/x"),  # 200 KB
        review_of(*[near_miss] * 2000),  # 1.6 MB, 2,000 containers
    ]
    bodies = [json.dumps(review).encode() for review in pathological]
    done = threading.Event()
    answers: list[int] = []

    def send_pathological() -> None:
        with httpx.Client(base_url=webhook.url, verify=webhook.ssl_context(), timeout=60) as client:
            for _ in range(3):
                for body in bodies:
                    answer = client.post("/mutate", content=body, headers={"Content-Type": "application/json"})
                    answers.append(answer.status_code)
        done.set()

    latencies: list[float] = []
    ordinary = json.dumps(review_of("nginx:1.27", "quay.io/org/app:1")).encode()
    with httpx.Client(base_url=webhook.url, verify=webhook.ssl_context(), timeout=60) as client:
        client.post("/mutate", content=ordinary, headers={"Content-Type": "application/json"})  # warm
        sender = threading.Thread(target=send_pathological, daemon=True)
        sender.start()
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            started = time.perf_counter()
            answer = client.post("/mutate", content=ordinary, headers={"Content-Type": "application/json"})
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 200
        sender.join(timeout=60)
    assert answers == [200] * 12, answers
    assert len(latencies) >= 20, "too few ordinary reviews overlapped the pathological ones"
    assert max(latencies) < BOUND_SECONDS, f"slowest ordinary review {max(latencies) * 1000:.0f} ms"
    for line in webhook.log().splitlines()[-15:]:
        assert len(line) < 3_000_000  # even the 2,000-container pod logs one bounded line
