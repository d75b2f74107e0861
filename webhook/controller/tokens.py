"""The leader's ECR token: adopted from our own Secret when still fresh, else fetched; renewed at half-life.

A new leader first looks at the pull Secret in the controller's own namespace (a
namespace the chart's admission policy protects): if it holds a token that is not due
for renewal, that token is adopted, and a leadership change rewrites nothing. Tokens
are never adopted from tenant namespaces. A standby holds no token and sleeps until it
leads; a failed fetch backs off and leaves the existing Secrets alone.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable

from webhook.controller.ecr import AwsError, TokenSource
from webhook.controller.heartbeat import Heartbeats
from webhook.controller.kube import Backoff
from webhook.controller.metrics import ControllerMetrics
from webhook.core.token import Token

log = logging.getLogger("ecr_pullthrough.controller")

LOOP = "tokens"
# A standby has nothing to renew: it sleeps until `leading_started` wakes it (and beats meanwhile).
STANDBY_WAIT_SECONDS = 3600.0


class TokenKeeper:
    def __init__(
        self,
        source: TokenSource,
        *,
        metrics: ControllerMetrics,
        is_leader: Callable[[], bool],
        heartbeats: Heartbeats,
        stop: threading.Event,
        caches_synced: threading.Event,
        adopt: Callable[[], Token | None],
        on_token: Callable[[bool], None],
        refresh_floor: datetime.timedelta,
    ) -> None:
        self.source, self.metrics, self.is_leader, self.heartbeats = source, metrics, is_leader, heartbeats
        self.stop, self.caches_synced, self.adopt, self.on_token = stop, caches_synced, adopt, on_token
        self.refresh_floor = refresh_floor
        self.token: Token | None = None
        self.error: str | None = None
        self.wanted = threading.Event()

    def leading_started(self) -> None:
        self.wanted.set()

    def leading_stopped(self) -> None:
        """A standby holds no token and reports none: leader-only state goes with leadership."""
        self.token, self.error = None, None
        self.metrics.token_expiry.set(0)
        self.metrics.last_refresh.set(0)

    def shutdown(self) -> None:
        self.wanted.set()

    def run(self) -> None:
        backoff = Backoff(1, 300)
        while not self.stop.is_set():
            wait = self._refresh_in() if self.is_leader() else STANDBY_WAIT_SECONDS
            self.heartbeats.wait(LOOP, self.wanted, wait)
            self.wanted.clear()
            if self.stop.is_set() or not self.is_leader():
                continue
            # The adopted token must be judged against the Secrets as they are: wait for the caches.
            while not self.caches_synced.is_set() and not self.stop.is_set():
                self.heartbeats.wait(LOOP, self.caches_synced, 1)
            now = datetime.datetime.now(datetime.UTC)
            if self.token is None and (adopted := self.adopt()) is not None and now < self._due(adopted):
                self._hold(adopted, adopted_from_secret=True)
                continue
            if self.token is not None and self.token.valid(now) and now < self._due(self.token):
                self.on_token(False)  # a new leader with a good token: look at every namespace
                continue
            try:
                fresh = self.source.fetch()
            except AwsError as error:
                self.metrics.aws_errors.labels("GetAuthorizationToken", error.metric_code).inc()
                self.error = f"GetAuthorizationToken failed: {error}"
                delay = backoff.next()
                log.warning(
                    "ECR token fetch failed; existing secrets stay",
                    extra={"fields": {"code": error.code, "error": error.message, "retryIn": round(delay, 1)}},
                )
                self.heartbeats.wait(LOOP, self.stop, delay)
                self.wanted.set()
                continue
            backoff.reset()
            self._hold(fresh, adopted_from_secret=False)

    def _hold(self, token: Token, *, adopted_from_secret: bool) -> None:
        self.token, self.error = token, None
        self.metrics.token_expiry.set(token.expires_at.timestamp())
        self.metrics.last_refresh.set(token.fetched_at.timestamp())
        log.info(
            "ECR token adopted from our own Secret" if adopted_from_secret else "ECR token fetched",
            extra={
                "fields": {
                    "expiresAt": token.expires_at.isoformat(),
                    "refreshAt": self._due(token).isoformat(),
                }
            },
        )
        self.on_token(not adopted_from_secret)

    def _due(self, token: Token) -> datetime.datetime:
        return token.refresh_at(self.refresh_floor)

    def _refresh_in(self) -> float:
        token = self.token
        if token is None:
            return 5.0
        return max((self._due(token) - datetime.datetime.now(datetime.UTC)).total_seconds(), 0.0)
