"""The admission adapter: decode the review, mutate the pod, encode the answer, log and count.

It never blocks a pod: anything unexpected, including a bug of ours, becomes
`allowed: true` with no patch, logged and counted. Only a body that is not an
AdmissionReview at all gets an error status (400), and the API server's
`failurePolicy: Ignore` admits the pod anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webhook.admission import review
from webhook.admission.metrics import WebhookMetrics
from webhook.core.mutate import EPHEMERAL_SUBRESOURCE, Mutation, PodPolicy, mutate_pod
from webhook.core.pull_outcomes import trial_upstreams
from webhook.core.rewrite import DecisionCache
from webhook.core.upstream_status import Verification

# Longer than any valid reference (images.MAX_REFERENCE_LENGTH), short enough for one log line.
MAX_LOGGED_IMAGE = 1024
log = logging.getLogger("ecr_pullthrough.webhook")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]


class AdmissionHandler:
    def __init__(
        self,
        policy: PodPolicy,
        metrics: WebhookMetrics,
        verification: Callable[[], Verification] | None = None,
    ) -> None:
        self.policy = policy
        self.metrics = metrics
        # None: rewrite without asking whether the upstream is verified.
        self.verification = verification
        self.cache = DecisionCache(policy.rules)
        self._image_counters: dict[tuple[str, str], Any] = {}

    def handle(self, body: bytes) -> Answer:
        started = time.perf_counter()
        try:
            request = review.parse_review(body)
        except review.BadReviewError as error:
            self.metrics.admissions.labels("bad_request").inc()
            log.warning("bad admission request", extra={"fields": {"uid": error.uid, "reason": error.reason}})
            return Answer(400, {"uid": error.uid, "error": error.reason})
        try:
            answer = self._review(request)
        except Exception:  # fail open: a bug of ours must never block a pod
            self.metrics.admissions.labels("error").inc()
            log.exception("admission failed; allowed unchanged", extra={"fields": {"uid": request.uid}})
            answer = review.allowed(request.uid)
        self.metrics.duration.observe(time.perf_counter() - started)
        return Answer(200, answer)

    def _review(self, request: review.AdmissionRequest) -> dict[str, Any]:
        fields = _request_fields(request)
        expected = request.is_pod and (
            (request.operation == "CREATE" and request.sub_resource == "")
            or (request.operation == "UPDATE" and request.sub_resource == EPHEMERAL_SUBRESOURCE)
        )
        if not expected or not isinstance(request.object, dict):
            self.metrics.admissions.labels("ignored").inc()
            log.warning(
                "unexpected object allowed unchanged",
                extra={
                    "fields": {
                        **fields,
                        "kind": request.kind.kind,
                        "resource": request.resource.resource,
                        "operation": request.operation,
                    }
                },
            )
            return review.allowed(request.uid)

        verified = self.verification() if self.verification else None
        if verified is not None and verified.trial:
            # A degraded upstream still gets one pod in N (chosen by the request's uid): its pulls
            # are how the controller sees the cache work again.
            verified = verified.with_trial(trial_upstreams(verified.trial, request.uid))
        mutation = mutate_pod(
            request.object,
            self.policy,
            namespace=request.namespace,
            sub_resource=request.sub_resource,
            old_pod=request.old_object,
            verified=verified,
            cache=self.cache,
        )
        outcome = "skipped" if mutation.skipped else "patched" if mutation.patch else "unchanged"
        self.metrics.admissions.labels(outcome).inc()
        # One increment per reason, not per container: each takes the counter's lock.
        reasons: dict[str, int] = {}
        for item in mutation.containers:
            reason = item.decision.reason.value
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in reasons.items():
            self._count_images(reason, mutation.mode, count)
        if log.isEnabledFor(logging.INFO):
            fields["outcome"] = outcome
            fields.update(describe(mutation))
            log.info("admission", extra={"fields": fields})
        return review.patched(request.uid, mutation.patch)

    def _count_images(self, reason: str, mode: str, count: int) -> None:
        counter = self._image_counters.get((reason, mode))
        if counter is None:
            counter = self._image_counters[(reason, mode)] = self.metrics.images.labels(reason, mode)
        counter.inc(count)


def describe(mutation: Mutation) -> dict[str, Any]:
    """What changed and why not, for the log line (and the demo)."""
    if mutation.skipped:
        return {"skipped": mutation.skipped}
    return {
        "mode": mutation.mode,
        "rewritten": [
            {"container": c.name, "from": c.decision.original, "to": c.decision.image} for c in mutation.rewritten
        ],
        "unchanged": [
            {"container": c.name, "image": _loggable(c.decision.original), "reason": c.decision.reason.value}
            | ({"detail": c.decision.detail} if c.decision.detail else {})
            for c in mutation.containers
            if not c.decision.changed
        ],
    }


def _loggable(image: object) -> object:
    """An invalid image may be 200 KB long: the log line keeps its start and says how much is cut."""
    if isinstance(image, str) and len(image) > MAX_LOGGED_IMAGE:
        return f"{image[:MAX_LOGGED_IMAGE]}... ({len(image) - MAX_LOGGED_IMAGE} more characters)"
    return image


def _request_fields(request: review.AdmissionRequest) -> dict[str, Any]:
    metadata = (request.object or {}).get("metadata")
    pod = request.name
    if not pod and isinstance(metadata, dict):
        pod = next((v for v in (metadata.get("name"), metadata.get("generateName")) if isinstance(v, str) and v), "")
    return {
        "uid": request.uid,
        "namespace": request.namespace,
        "pod": pod,
        "operation": request.operation,
        "subResource": request.sub_resource,
        "dryRun": request.dry_run,
    }
