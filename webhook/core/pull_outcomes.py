"""The pull-outcome guard: the cluster's own evidence that pulls through the cache fail.

Verification probes one image per upstream now and then; real pulls can fail where no probe
looks (an image the upstream credential may not read, the repository quota, a KMS key the
node cannot use, a broken network path from the nodes). The kubelet reports every pull as an
Event on its pod: `Pulled` ("Successfully pulled image "X" in 1.2s ...") or `Failed` ("Failed
to pull image "X": <error>"). For images under the cache, those become `Outcome`s, kept per
upstream in a sliding `OutcomeWindow`, and `degradation` decides when an upstream is
`degraded` (the webhook then stops rewriting it, as if unverified) and when it recovers.

Telling a bad image from a bad cache: a failure counts only when its error points at the
cache (401/403, not found, manifest unknown, TLS or connection errors, 5xx), and the
threshold asks for failures of several *distinct images* from several distinct pods, and for
a failure ratio. One image that does not exist upstream (a typo) fails on every pod and node
that runs it, but it is one image: it never degrades the upstream on its own. An image the
user excluded is never rewritten, so its pulls are not under the cache and are not seen.
Pure: no I/O.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from webhook.core.upstream_status import Target

PULLED = re.compile(r'^Successfully pulled image "([^"]+)"')
FAILED = re.compile(r'^Failed to pull image "([^"]+)": (.*)', re.DOTALL)
# Errors that point at the cache or the path to it, as containerd and the kubelet word them.
CACHE_ERRORS = re.compile(
    r"\b(?:401|403|404|429|500|502|503|504)\b|unauthorized|forbidden|denied|no basic auth credentials"
    r"|not found|manifest unknown|x509|tls|certificate|connection refused|connection reset|i/o timeout"
    r"|no such host|no route to host|unexpected eof|toomanyrequests|deadline exceeded",
    re.IGNORECASE,
)
MAX_ERROR = 300  # characters of an error kept as evidence


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When an upstream is degraded, and when it recovers (the controller's --pull-guard-* settings)."""

    window_seconds: float = 600.0
    min_failures: int = 5
    min_images: int = 2
    min_pods: int = 3
    failure_ratio: float = 0.5
    quiet_seconds: float = 300.0
    trial_one_in: int = 10


@dataclass(frozen=True, slots=True)
class Outcome:
    at: float  # seconds since the epoch
    upstream: str
    image: str
    pod: str  # namespace/name
    node: str
    failed: bool
    error: str = ""


def outcome(reason: str, message: str, *, at: float, pod: str, node: str, target: Target) -> Outcome | None:
    """The outcome a kubelet pull Event reports, for an image under the cache; None for anything else.

    A failure whose error does not point at the cache (a full disk, a cancelled pull) is None too.
    """
    if reason == "Pulled":
        match = PULLED.match(message)
        failed, error = False, ""
    elif reason == "Failed":
        match = FAILED.match(message)
        error = match.group(2).strip() if match else ""
        failed = True
        if match and not CACHE_ERRORS.search(error):
            return None
        # containerd's errors repeat the reference and end with what went wrong: keep the end.
        error = error if len(error) <= MAX_ERROR else "..." + error[-MAX_ERROR:]
    else:
        return None
    if match is None:
        return None
    upstream = upstream_of(match.group(1), target)
    if upstream is None:
        return None
    return Outcome(at, upstream, match.group(1), pod, node, failed, error)


def upstream_of(image: str, target: Target) -> str | None:
    """The upstream whose pull-through path `image` is on (`<registry>/<prefix>/...`), if any."""
    head, _, rest = image.partition("/")
    if head != target.registry:
        return None
    prefix = rest.partition("/")[0]
    for upstream, wanted in target.prefixes.items():
        if wanted == prefix:
            return upstream
    return None


class OutcomeWindow:
    """One upstream's outcomes over the last `window_seconds`, at most `max_outcomes` of them."""

    def __init__(self, thresholds: Thresholds, max_outcomes: int = 10_000) -> None:
        self.thresholds = thresholds
        self._outcomes: collections.deque[Outcome] = collections.deque(maxlen=max_outcomes)
        self.last_failure: float | None = None
        self.last_success: float | None = None

    def clear(self) -> None:
        self._outcomes.clear()
        self.last_failure = self.last_success = None

    def add(self, item: Outcome) -> None:
        self._outcomes.append(item)
        if item.failed:
            self.last_failure = max(item.at, self.last_failure or item.at)
        else:
            self.last_success = max(item.at, self.last_success or item.at)

    def evidence(self, now: float) -> str | None:
        """One sentence when the failures cross the threshold at `now`, else None."""
        limit = self.thresholds
        while self._outcomes and self._outcomes[0].at < now - limit.window_seconds:
            self._outcomes.popleft()
        failures = [o for o in self._outcomes if o.failed and o.at <= now]
        succeeded = sum(1 for o in self._outcomes if not o.failed and o.at <= now)
        images = {o.image for o in failures}
        pods = {o.pod for o in failures}
        nodes = {o.node for o in failures if o.node}
        total = len(failures) + succeeded
        if (
            len(failures) < limit.min_failures
            or len(images) < limit.min_images
            or len(pods) < limit.min_pods
            or len(failures) < limit.failure_ratio * total
        ):
            return None
        sample = failures[-1]
        minutes = round(limit.window_seconds / 60)
        return (
            f"{len(failures)} of {total} pulls through the cache failed in the last {minutes} min "
            f"({len(images)} images, {len(pods)} pods, {len(nodes)} nodes), e.g. {sample.image}: {sample.error}"
        )


@dataclass(frozen=True, slots=True)
class Degraded:
    since: datetime.datetime
    evidence: str


def degradation(previous: Degraded | None, window: OutcomeWindow, now: datetime.datetime) -> Degraded | None:
    """The upstream's degradation at `now`, given the last one and its window.

    Degraded from the moment the evidence crosses the threshold; recovered at `recovery_due`, and
    the window starts afresh. The webhook rewrites again only once the normal verification passes
    too, since it requires both.
    """
    if previous is not None and now.timestamp() >= recovery_due(previous, window):
        window.clear()  # what degraded it is answered; judge afresh from here
        return None
    evidence = window.evidence(now.timestamp())
    if previous is None:
        return Degraded(now, evidence) if evidence is not None else None
    return Degraded(previous.since, evidence or previous.evidence)


def recovery_due(previous: Degraded, window: OutcomeWindow) -> float:
    """When (seconds since the epoch) a degraded upstream recovers if nothing else fails.

    `quiet_seconds` after the last failed pull, once a pull through the cache has succeeded since
    (a trial pod, or a pod rewritten earlier whose retry now works). Without such proof, a whole
    window: pods that keep failing retry with the kubelet's backoff (up to 5 minutes apart), and a
    gap between two retries is no sign of a working cache.
    """
    quiet_since = window.last_failure if window.last_failure is not None else previous.since.timestamp()
    limit = window.thresholds
    proven = window.last_success is not None and window.last_success > quiet_since
    return quiet_since + (limit.quiet_seconds if proven else max(limit.quiet_seconds, limit.window_seconds))


def is_trial(uid: str, one_in: int) -> bool:
    """Whether the pod of this admission (by its uid) is the one in `one_in` rewritten while degraded.

    A function of the request alone, like every other decision of the webhook. `one_in` 0: never.
    """
    if one_in <= 0:
        return False
    if one_in == 1:
        return True
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") % one_in == 0


def trial_upstreams(trial: Mapping[str, int], uid: str) -> frozenset[str]:
    return frozenset(upstream for upstream, one_in in trial.items() if is_trial(uid, one_in))
