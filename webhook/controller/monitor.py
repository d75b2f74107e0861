"""The controller's side of verified upstreams: verify now and then, publish the status, say what to fix.

The status goes into a ConfigMap in the controller's namespace (the chart mounts
it into the webhook pods); `/readyz`, the metric `ecr_pullthrough_upstream_verified`
and a Kubernetes Event on each change say which upstream is unverified and why.
Verification makes one real registry request per upstream, so it runs rarely:
at start, when asked, and every `interval` (sooner while an upstream fails).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge
from urllib3.exceptions import HTTPError

from webhook.controller.heartbeat import Heartbeats
from webhook.controller.kube import REQUEST_TIMEOUT, Backoff, body, record_event
from webhook.controller.secrets import COMPONENT
from webhook.controller.upstreams import Verifier
from webhook.core.pull_outcomes import Degraded
from webhook.core.upstream_status import (
    DOCUMENT_KEY,
    HOLD_RETRY_SECONDS,
    Check,
    StatusDocument,
    UpstreamStatus,
    advance,
)

log = logging.getLogger("ecr_pullthrough.upstreams")
LOOP = "upstreams"
# While a verification must wait (see `waiting`), look again this often, besides being woken.
WAITING_RECHECK_SECONDS = 5.0
# One verification makes several AWS calls and registry requests, each with its own timeouts and retries.
MAX_SILENCE = 600.0


class UpstreamMonitor:
    def __init__(
        self,
        api: client.ApiClient,
        verifier: Verifier,
        *,
        namespace: str,
        configmap: str,
        interval: float,
        registry: CollectorRegistry,
        due: threading.Event | None = None,
        heartbeats: Heartbeats | None = None,
        token_problem: Callable[[], str | None] = lambda: None,
        waiting: Callable[[], str | None] = lambda: None,
        degradations: Callable[[datetime.datetime], Mapping[str, Degraded]] = lambda _now: {},
        trial_one_in: int = 10,
    ) -> None:
        """`waiting` says what must happen before a verification may be published (None: nothing): in
        secret mode, a new leader's pull Secrets must be in place first."""
        # Any: plain dicts in and out, the typed signatures want the generated models.
        self.core: Any = client.CoreV1Api(api)
        self.verifier, self.namespace, self.configmap, self.interval = verifier, namespace, configmap, interval
        self.due = due or threading.Event()  # set it to verify now
        self.heartbeats = heartbeats or Heartbeats()
        self.token_problem, self.waiting = token_problem, waiting
        self.degradations, self.trial_one_in = degradations, trial_one_in
        self.last: StatusDocument | None = None
        self._is_leader: Callable[[], bool] = lambda: True  # set by run()
        self.verified = Gauge(
            "ecr_pullthrough_upstream_verified",
            "1 while the upstream's pull-through rule, credential and import permission are verified, else 0.",
            ["upstream"],
            registry=registry,
        )
        self.held = Gauge(
            "ecr_pullthrough_upstream_held",
            "1 while a verified upstream is held through transient errors, else 0.",
            ["upstream"],
            registry=registry,
        )
        self.degraded = Gauge(
            "ecr_pullthrough_upstream_degraded",
            "1 while real pulls through the cache fail past the pull-outcome guard's threshold, else 0.",
            ["upstream"],
            registry=registry,
        )
        self.checked = Gauge(
            "ecr_pullthrough_upstream_checked_timestamp_seconds", "Last upstream verification.", registry=registry
        )
        self.failures = Counter(
            "ecr_pullthrough_upstream_check_failures",
            "Failed upstream checks by kind: definitive (flips at once) or transient (held).",
            ["upstream", "kind"],
            registry=registry,
        )

    def problems(self) -> list[str]:
        """What is wrong with the upstreams, for /readyz's body (never its status code); a standby has none."""
        document = self.last
        if document is None or not self._is_leader():
            return []
        found = []
        for s in document.upstreams:
            if not s.verified:
                found.append(f"upstream {s.upstream} unverified: {s.reason}")
            elif s.held_since is not None:
                since = s.held_since.isoformat(timespec="seconds")
                found.append(f"upstream {s.upstream} held verified through transient errors since {since}: {s.reason}")
            if s.degraded_since is not None:
                since = s.degraded_since.isoformat(timespec="seconds")
                found.append(f"upstream {s.upstream} degraded since {since}: {s.degraded_reason}")
        return found

    def leading_stopped(self) -> None:
        """A standby publishes nothing: its last result and gauges go, so its readiness says standby."""
        self.last = None
        self.verified.clear()
        self.held.clear()
        self.degraded.clear()
        self.checked.set(0)

    def run(self, is_leader: Callable[[], bool], stop: threading.Event) -> None:
        self._is_leader = is_leader
        retry = Backoff(30, self.interval)
        while not stop.is_set():
            delay = self.interval
            if is_leader():
                delay = self._verify_once(is_leader, retry)
            self.heartbeats.wait(LOOP, self.due, delay, MAX_SILENCE)
            self.due.clear()

    def _verify_once(self, is_leader: Callable[[], bool], retry: Backoff) -> float:
        """Verify, publish, and return when to verify next."""
        waiting = self.waiting()
        if waiting is not None:
            log.debug("upstream verification waits", extra={"fields": {"for": waiting}})
            return WAITING_RECHECK_SECONDS  # `due` is set as soon as the wait is over
        now = datetime.datetime.now(datetime.UTC)
        try:
            checks = self.verifier.verify(now, self.token_problem())
        except Exception:  # e.g. http.client errors from an egress proxy: not OSError
            delay = min(self.interval, retry.next())
            log.exception("upstream verification failed; retrying", extra={"fields": {"retryIn": delay}})
            return delay
        if not checks:
            return self.interval  # no token yet: the token's arrival wakes us
        for check in checks:
            if check.problem is not None:
                kind = "transient" if check.transient else "definitive"
                self.failures.labels(check.upstream, kind).inc()
        try:
            if not is_leader():  # leadership can lapse during a slow verification
                return self.interval
            document = self._publish(checks, now)
            if not is_leader():  # stepped down while publishing: forget it again, as a standby must
                self.leading_stopped()
                return self.interval
        except (ApiException, HTTPError, OSError) as error:
            log.warning("upstream status not published", extra={"fields": {"error": str(error)[:300]}})
            return 10.0
        if any(s.held_since is not None for s in document.upstreams):
            delay = HOLD_RETRY_SECONDS
        elif all(s.verified for s in document.upstreams):
            retry.reset()
            delay = self.interval
        else:
            delay = min(self.interval, retry.next())
        token = self.verifier.token()
        if token is not None and token.valid(now):  # wake when it expires, to say so
            delay = min(delay, max((token.expires_at - now).total_seconds(), 1.0))
        return delay

    def _publish(self, checks: list[Check], now: datetime.datetime) -> StatusDocument:
        current = self._read()
        previous = self.last or _document_in(current)
        before = {s.upstream: s for s in previous.upstreams} if previous else {}
        degraded = self.degradations(now)
        document = StatusDocument(
            now,
            tuple(
                _with_degradation(
                    advance(before.get(c.upstream), c, now, self.verifier.registry, self.verifier.pull_secret_mode),
                    degraded.get(c.upstream),
                    self.trial_one_in,
                )
                for c in checks
            ),
        )
        self.last = document
        self.checked.set(now.timestamp())
        changed = []
        for status in document.upstreams:
            self.verified.labels(status.upstream).set(1 if status.verified else 0)
            self.held.labels(status.upstream).set(1 if status.held_since is not None else 0)
            self.degraded.labels(status.upstream).set(1 if status.degraded_since is not None else 0)
            old = before.get(status.upstream)
            if _news(old, status):
                changed.append(status)
                log.log(
                    logging.INFO if status.verified and status.held_since is None else logging.WARNING,
                    _headline(status),
                    extra={
                        "fields": {
                            "upstream": status.upstream,
                            "prefix": status.prefix,
                            "reason": status.reason,
                            "kind": "transient" if status.held_since is not None else "definitive",
                        }
                        | ({"degraded": status.degraded_reason} if status.degraded_since is not None else {})
                    },
                )
        configmap = self._write(current, document)
        for status in changed:
            reason, message = _event(status)
            record_event(
                self.core,
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": configmap.get("metadata") or {}},
                reason=reason,
                message=message,
                warning=reason != "UpstreamVerified",
                component=COMPONENT,
            )
        return document

    def _read(self) -> dict[str, Any] | None:
        try:
            return body(
                self.core.read_namespaced_config_map(
                    self.configmap, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as error:
            if error.status != 404:
                raise
            return None

    def _write(self, current: dict[str, Any] | None, document: StatusDocument) -> dict[str, Any]:
        data = {DOCUMENT_KEY: document.to_json()}
        if current is None:
            new = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": self.configmap,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "ecr-pullthrough"},
                },
                "data": data,
            }
            return body(
                self.core.create_namespaced_config_map(
                    self.namespace, new, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        current["data"] = data
        return body(
            self.core.replace_namespaced_config_map(
                self.configmap, self.namespace, current, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )


def _document_in(configmap: dict[str, Any] | None) -> StatusDocument | None:
    """The status a former leader published: a new leader holds through transient errors from there."""
    text = ((configmap or {}).get("data") or {}).get(DOCUMENT_KEY)
    try:
        return StatusDocument.parse(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _with_degradation(status: UpstreamStatus, degraded: Degraded | None, trial_one_in: int) -> UpstreamStatus:
    if degraded is None:
        return status
    return dataclasses.replace(
        status, degraded_since=degraded.since, degraded_reason=degraded.evidence, trial_one_in=trial_one_in
    )


def _news(old: UpstreamStatus | None, new: UpstreamStatus) -> bool:
    """Worth a log line and an Event: a flip, a new hold or degradation, or a new reason for being unverified."""
    if old is None or old.verified != new.verified or (old.held_since is None) != (new.held_since is None):
        return True
    if (old.degraded_since is None) != (new.degraded_since is None):
        return True
    return not new.verified and old.reason != new.reason


def _headline(status: UpstreamStatus) -> str:
    if not status.verified:
        return "upstream unverified"
    if status.degraded_since is not None:
        return "upstream degraded: pulls through the cache fail"
    return "upstream held verified through a transient error" if status.held_since else "upstream verified"


def _event(status: UpstreamStatus) -> tuple[str, str]:
    """The Event's reason and message for a status worth one."""
    if not status.verified:
        return "UpstreamUnverified", f"{status.upstream}: {status.reason}"
    if status.degraded_since is not None:
        return "UpstreamDegraded", (
            f"{status.upstream}: {status.degraded_reason}; new pods keep their original images "
            f"(one in {status.trial_one_in} is still rewritten, to see recovery)"
        )
    if status.held_since is not None:
        return "UpstreamHeld", f"{status.upstream}: {status.reason}"
    return "UpstreamVerified", f"{status.upstream}: verified"
