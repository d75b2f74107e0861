"""The controller: a fresh ECR pull secret in every namespace, level-based.

`reconcile(namespace)` computes the Secret that should exist and writes only
when the one that exists differs. Watches only say *which* namespace to look
at: namespaces (a new one is urgent), and our own Secrets, listed and watched
with `fieldSelector=metadata.name=<name>` so that RBAC can restrict every
Secret verb but `create` to that one name. A periodic resync and every new
token queue all namespaces at normal priority. Only the leader fetches tokens
and writes; a standby keeps its caches warm and writes nothing.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from webhook.controller.caches import Caches, resource_version
from webhook.controller.ecr import TokenSource
from webhook.controller.heartbeat import Heartbeats
from webhook.controller.kube import REQUEST_TIMEOUT, Backoff, RateLimiter, body, record_event
from webhook.controller.metrics import ControllerMetrics
from webhook.controller.tokens import TokenKeeper
from webhook.controller.workqueue import NORMAL, WorkQueue
from webhook.core import pullsecret
from webhook.core.selectors import Selector
from webhook.core.token import Token

log = logging.getLogger("ecr_pullthrough.controller")
COMPONENT = "ecr-pullthrough-controller"


@dataclass(frozen=True, slots=True)
class SecretTarget:
    name: str
    registry: str
    excluded_names: frozenset[str]
    excluded_by_labels: Selector
    # The controller's own namespace: the only place a token is adopted from.
    home_namespace: str = ""
    # Which installation the Secrets belong to (the label ecr-pullthrough/instance); see pullsecret.
    instance: str = "ecr-pullthrough"


# A write that keeps failing (a quota, a policy engine, an immutable Secret) is retried with
# backoff per namespace, from 5 s up to about 5 minutes, and reset by a success.
WRITE_RETRY_BASE_SECONDS = 5.0
WRITE_RETRY_CAP_SECONDS = 300.0
# A 409 (AlreadyExists, or a stale resourceVersion) is looked at again this soon.
CONFLICT_RETRY_SECONDS = 0.1
# Bounded metric label values for failed writes.
WRITE_FAILURE_REASONS = {403: "forbidden", 404: "not-found", 422: "invalid", 429: "throttled"}


class Controller:
    def __init__(
        self,
        api: client.ApiClient,
        tokens: TokenSource,
        target: SecretTarget,
        *,
        metrics: ControllerMetrics,
        is_leader: Callable[[], bool],
        heartbeats: Heartbeats | None = None,
        workers: int = 4,
        resync_seconds: float = 600,
        token_refresh_floor: datetime.timedelta = datetime.timedelta(seconds=60),
        writes: RateLimiter | None = None,
        on_token: Callable[[], None] | None = None,
        distribute: bool = True,
        on_placed: Callable[[], None] | None = None,
    ) -> None:
        """`distribute=False` (pull-secret mode node-role): keep the leader's token for the upstream
        verification and write no Secret; nothing is listed or watched, so no Secret permission is needed.

        `on_placed` is called when a new leader's first pass has looked at every namespace (see `placed`)."""
        # Any: we send and receive plain dicts; the typed signatures want the generated models.
        self.core: Any = client.CoreV1Api(api)
        self.target, self.metrics, self.is_leader = target, metrics, is_leader
        self.heartbeats = heartbeats or Heartbeats()
        self.workers, self.resync_seconds = workers, resync_seconds
        self.writes = writes or RateLimiter(20, 40)
        self.on_token = on_token or (lambda: None)
        self.distribute = distribute
        self.on_placed = on_placed or (lambda: None)
        # Set once a leader's first pass with its token has reconciled every namespace it knew then:
        # the pull Secret is in place (or its trouble reported) before the upstreams are published as
        # verified for secret mode, so a webhook never adds a pull secret ahead of the Secret.
        self.placed = threading.Event()
        self._first_pass: set[str] | None = None
        self.stop = threading.Event()
        self.queue = WorkQueue()
        metrics.queue_depth.set_function(lambda: len(self.queue))
        self._lock = threading.Lock()
        self._in_sync: set[str] = set()
        self._reported_foreign: dict[str, str] = {}  # namespace -> resourceVersion reported
        # namespace -> the other installation whose Secret of our name is there (a release conflict).
        self._other_instance: dict[str, str] = {}
        self._write_backoff: dict[str, Backoff] = {}  # namespace -> backoff of a write that keeps failing
        self.caches = Caches(
            self.core,
            secret_name=target.name,
            home_namespace=target.home_namespace,
            excluded_names=target.excluded_names,
            excluded_by_labels=target.excluded_by_labels,
            stop=self.stop,
            heartbeats=self.heartbeats,
            enqueue=self.queue.add,
            forget=self._forget,
            changed=self._publish_counts,
        )
        self.caches_synced = self.caches.synced
        self.keeper = TokenKeeper(
            tokens,
            metrics=metrics,
            is_leader=is_leader,
            heartbeats=self.heartbeats,
            stop=self.stop,
            caches_synced=self.caches_synced,
            adopt=self._adoptable_token,
            on_token=self._token_changed,
            refresh_floor=token_refresh_floor,
        )

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> list[threading.Thread]:
        loops: list[tuple[str, Callable[[], None]]] = [("tokens", self.keeper.run)]
        if self.distribute:
            loops += [
                ("watch-namespaces", self.caches.namespace_watch.run),
                ("watch-secrets", self.caches.secret_watch.run),
                ("resync", self._resync_loop),
            ]
            loops += [(f"worker-{i}", functools.partial(self._work, f"worker-{i}")) for i in range(self.workers)]
        else:
            self.caches.synced.set()  # nothing to list: the token keeper need not wait for the caches
        threads = [
            threading.Thread(target=self.heartbeats.guarded(name, run, self.stop), name=name, daemon=True)
            for name, run in loops
        ]
        for thread in threads:
            thread.start()
        return threads

    def shutdown(self) -> None:
        self.stop.set()
        self.queue.close()
        self.keeper.shutdown()

    def leading_started(self) -> None:
        """Called when this replica becomes leader: get a token now and look at every namespace."""
        self.metrics.leader.set(1)
        self.keeper.leading_started()

    def leading_stopped(self) -> None:
        """A former leader forgets what only a leader knows, so its health and gauges say standby."""
        self.metrics.leader.set(0)
        self.keeper.leading_stopped()
        self.placed.clear()
        with self._lock:
            self._first_pass = None
            self._in_sync.clear()
            self._write_backoff.clear()
            self._other_instance.clear()
        self._publish_counts()

    def current_token(self) -> Token | None:
        return self.keeper.token

    @property
    def token_error(self) -> str | None:
        return self.keeper.error

    # -- readiness -----------------------------------------------------------------------------------------

    def not_ready_reason(self) -> str | None:
        """None when this process can do its work (both caches listed); otherwise what it waits for.

        AWS trouble never makes a replica unready: a rollout or `helm --wait` must not hinge on
        AWS health. It is listed by `problems()` instead.
        """
        return self.caches.not_synced_reason() if self.distribute else None

    def placing(self) -> str | None:
        """What the leader still waits for before its pull Secrets are in place; None once they are
        (and always in node-role mode, which places none)."""
        if not self.distribute or self.placed.is_set():
            return None
        with self._lock:
            left = len(self._first_pass) if self._first_pass is not None else None
        if left is None:
            return "waiting for an ECR token to put the pull Secret in every namespace"
        return f"putting the pull Secret in every namespace ({left} left)"

    def problems(self) -> list[str]:
        """What is wrong with the leader's token, or a Secret of our name another release owns, for
        /readyz's body (never its status code)."""
        if not self.is_leader():
            return []  # a standby holds no token and writes nothing
        conflict = self._conflict_reason()
        return self._token_problems() + ([conflict] if conflict else [])

    def _token_problems(self) -> list[str]:
        token, error = self.keeper.token, self.keeper.error
        valid = token is not None and token.valid(datetime.datetime.now(datetime.UTC))
        if error is not None:
            kept = f"; the secrets keep the token valid until {token.expires_at.isoformat()}" if valid and token else ""
            return [error + kept]
        if not valid:
            return ["no valid ECR token yet"]
        return []

    def _conflict_reason(self) -> str | None:
        """Another installation owns the pull Secret of our name somewhere: a misconfiguration, said at once."""
        with self._lock:
            conflicts = dict(self._other_instance)
        if not conflicts:
            return None
        examples = ", ".join(f"{ns} ({owner})" for ns, owner in sorted(conflicts.items())[:3])
        return (
            f"the pull Secret {self.target.name} in {len(conflicts)} namespace(s) belongs to another "
            f"ecr-pullthrough installation, e.g. {examples}; left alone. Two releases cannot share a pull "
            "Secret name: give this release its own secretName"
        )

    def _forget(self, namespace: str) -> None:
        """A namespace that went away, or is now excluded, or is terminating: no reconcile state for it."""
        with self._lock:
            self._in_sync.discard(namespace)
            self._write_backoff.pop(namespace, None)

    def _adoptable_token(self) -> Token | None:
        """The token our own Secret in the controller's namespace holds, if any (see tokens.py)."""
        if not self.target.home_namespace:
            return None
        secret = self.caches.secret(self.target.home_namespace)
        return pullsecret.token_from(
            secret, self.target.registry, self.target.instance, datetime.datetime.now(datetime.UTC)
        )

    def _publish_counts(self) -> None:
        self.metrics.namespaces.set(self.caches.count())
        with self._lock:
            self.metrics.in_sync.set(len(self._in_sync))

    # -- tokens and resync ---------------------------------------------------------------------------------

    def _token_changed(self, fresh: bool) -> None:
        if fresh:
            with self._lock:
                self._in_sync.clear()  # every secret holds the previous token until rewritten
        if self.distribute and not self.placed.is_set():
            with self._lock:
                if self._first_pass is None:
                    self._first_pass = set(self.caches.namespaces())
            self._attempted(None)
        if self.distribute:
            self.enqueue_all(NORMAL)
        self.on_token()

    def _attempted(self, namespace: str | None) -> None:
        """`namespace` was reconciled (written, in sync, or its trouble reported): one less to wait for."""
        with self._lock:
            if self._first_pass is None or self.placed.is_set():
                return
            self._first_pass.discard(namespace or "")
            if self._first_pass:
                return
            self.placed.set()
        log.info("pull Secrets in place", extra={"fields": {"namespaces": self.caches.count()}})
        self.on_placed()

    def _resync_loop(self) -> None:
        while not self.heartbeats.wait("resync", self.stop, self.resync_seconds):
            self.metrics.resyncs.inc()
            self.enqueue_all(NORMAL)

    def enqueue_all(self, priority: int) -> None:
        for name in self.caches.namespaces():
            self.queue.add(name, priority)

    # -- reconcile -----------------------------------------------------------------------------------------

    def _work(self, name: str) -> None:
        # Writing before both caches are listed would create what exists and replace what is fine.
        while not self.caches_synced.is_set():
            if self.heartbeats.wait(name, self.caches_synced, 1) or self.stop.is_set():
                break
        while not self.stop.is_set():
            self.heartbeats.beat(name)
            namespace = self.queue.get(timeout=1)
            if namespace is None:
                continue
            # Counts for the first pass only if it ran with a token (the token is held before the pass starts).
            with_token = self.keeper.token is not None
            try:
                retry = self.reconcile(namespace)
            except Exception:
                log.exception("reconcile failed", extra={"fields": {"namespace": namespace}})
                retry = self._retry_after_failure(namespace)
            finally:
                self.queue.done(namespace)
            if with_token and retry != CONFLICT_RETRY_SECONDS:  # a conflict is looked at again at once
                self._attempted(namespace)
            if retry is not None:
                self.queue.add(namespace, NORMAL, delay=retry)

    def reconcile(self, namespace: str) -> float | None:
        """Make `namespace`'s secret match the current token. Returns a delay to retry after, or None."""
        if not self.is_leader() or not self.distribute:
            return None
        token = self.keeper.token
        wanted, actual = self.caches.wanted(namespace), self.caches.secret(namespace)
        decision = pullsecret.plan(
            namespace=namespace,
            name=self.target.name,
            registry=self.target.registry,
            instance=self.target.instance,
            wanted=wanted,
            token=token,
            actual=actual,
        )
        if decision.action == "other-instance" and actual is not None:
            self._report_other_instance(namespace, actual)
            return None
        with self._lock:
            self._other_instance.pop(namespace, None)
        if decision.action in ("foreign", "wrong-type") and actual is not None:
            self._report_foreign(namespace, actual, wrong_type=decision.action == "wrong-type")
            return None
        if decision.action == "in-sync":
            self._mark(namespace, True)
            log.debug("secret in sync", extra={"fields": {"namespace": namespace}})
            return None
        if decision.secret is None or token is None:
            return None  # not wanted, no token yet, or a newer token kept
        if not self.writes.acquire(self.stop) or not self.is_leader():
            return None  # leadership can lapse while we wait for the rate limiter
        try:
            if decision.action == "create":
                written = body(
                    self.core.create_namespaced_secret(
                        namespace, decision.secret, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                    )
                )
            else:
                # A merge patch: our labels, annotation and data only, with the resourceVersion as a
                # precondition; what others added (labels, owner references) stays.
                written = body(
                    self.core.patch_namespaced_secret(
                        self.target.name,
                        namespace,
                        decision.secret,
                        _preload_content=False,
                        _request_timeout=REQUEST_TIMEOUT,
                        _content_type="application/merge-patch+json",
                    )
                )
        except ApiException as error:
            return self._write_failed(namespace, error)
        except (HTTPError, OSError) as error:
            self.metrics.writes.labels("error").inc()
            self.metrics.write_failures.labels("unreachable").inc()
            log.warning("secret write failed", extra={"fields": {"namespace": namespace, "error": str(error)}})
            return self._retry_after_failure(namespace)
        result = "created" if decision.action == "create" else "updated"
        self.caches.remember_secret(namespace, written)
        with self._lock:
            self._write_backoff.pop(namespace, None)
        self.metrics.writes.labels(result).inc()
        self._mark(namespace, True)
        adopted = actual is not None and pullsecret.ownership(actual, self.target.instance, self.target.registry)
        log.info(
            "secret written",
            extra={
                "fields": {
                    "namespace": namespace,
                    "result": result,
                    "expiresAt": token.expires_at.isoformat(),
                    **({"adopted": True} if adopted == "adoptable" else {}),
                }
            },
        )
        return None

    def _retry_after_failure(self, namespace: str) -> float:
        with self._lock:
            backoff = self._write_backoff.setdefault(
                namespace, Backoff(WRITE_RETRY_BASE_SECONDS, WRITE_RETRY_CAP_SECONDS)
            )
            return backoff.next()

    def _write_failed(self, namespace: str, error: ApiException) -> float | None:
        if error.status == 409:  # AlreadyExists or a stale resourceVersion: look again
            self.metrics.writes.labels("conflict").inc()
            self._reread(namespace)
            return CONFLICT_RETRY_SECONDS
        self.metrics.writes.labels("error").inc()
        self._mark(namespace, False)
        status = error.status or 0
        reason = WRITE_FAILURE_REASONS.get(status, "server-error" if status >= 500 else "other")
        self.metrics.write_failures.labels(reason).inc()
        if error.status == 404 or (error.status == 403 and "being terminated" in str(error.body or "")):
            return None  # the namespace is going away
        retry = self._retry_after_failure(namespace)
        first = self._write_backoff[namespace].failures == 1
        log.warning(
            "secret write failed",
            extra={
                "fields": {
                    "namespace": namespace,
                    "status": error.status,
                    "reason": error.reason,
                    "retryIn": round(retry, 1),
                }
            },
        )
        if first:  # one Event per failing streak, not one per retry
            record_event(
                self.core,
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": self.target.name, "namespace": namespace}},
                reason="SecretWriteFailed",
                message=f"Secret {namespace}/{self.target.name} could not be written: {error.status} {error.reason}: "
                f"{_api_message(error)}; retrying with backoff up to {WRITE_RETRY_CAP_SECONDS:.0f}s",
                warning=True,
                component=COMPONENT,
            )
        return retry

    def _reread(self, namespace: str) -> None:
        try:
            current = body(
                self.core.read_namespaced_secret(
                    self.target.name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except (ApiException, HTTPError, OSError):
            return
        self.caches.remember_secret(namespace, current)

    def _mark(self, namespace: str, synced: bool) -> None:
        with self._lock:
            (self._in_sync.add if synced else self._in_sync.discard)(namespace)
        self._publish_counts()

    def _report_foreign(self, namespace: str, secret: dict[str, Any], *, wrong_type: bool = False) -> None:
        self._mark(namespace, False)
        version = resource_version(secret)
        if self._reported_foreign.get(namespace) == str(version):
            return
        self._reported_foreign[namespace] = str(version)
        self.metrics.writes.labels("foreign").inc()
        message = (
            f"Secret {namespace}/{self.target.name} is ours but of type {secret.get('type')}, not "
            f"{pullsecret.SECRET_TYPE}, and a Secret's type cannot change; left alone. Delete it to let "
            "ecr-pullthrough create it anew."
            if wrong_type
            else f"Secret {namespace}/{self.target.name} exists but is not managed by ecr-pullthrough "
            f"(no label {pullsecret.MANAGED_BY_LABEL}={pullsecret.MANAGED_BY}); left alone. "
            "Rename it, or delete it to let ecr-pullthrough create its own."
        )
        log.warning("foreign secret left alone", extra={"fields": {"namespace": namespace, "secret": self.target.name}})
        involved = {"apiVersion": "v1", "kind": "Secret", "metadata": secret.get("metadata") or {}}
        record_event(self.core, involved, reason="ForeignSecret", message=message, warning=True, component=COMPONENT)

    def _report_other_instance(self, namespace: str, secret: dict[str, Any]) -> None:
        """Two releases with one Secret name: never write (no flapping), say so once per version of it."""
        self._mark(namespace, False)
        owner = pullsecret.owner_of(secret)
        with self._lock:
            self._other_instance[namespace] = owner
        version = resource_version(secret)
        if self._reported_foreign.get(namespace) == f"other:{version}":
            return
        self._reported_foreign[namespace] = f"other:{version}"
        self.metrics.writes.labels("other-instance").inc()
        message = (
            f"Secret {namespace}/{self.target.name} belongs to another ecr-pullthrough installation ({owner}), "
            f"not to this one ({pullsecret.INSTANCE_LABEL}={self.target.instance}); left alone. Two releases "
            "cannot share a pull Secret name: give this release its own secretName."
        )
        log.warning(
            "secret of another installation left alone",
            extra={"fields": {"namespace": namespace, "secret": self.target.name, "owner": owner}},
        )
        involved = {"apiVersion": "v1", "kind": "Secret", "metadata": secret.get("metadata") or {}}
        record_event(
            self.core,
            involved,
            reason="SecretOwnedByAnotherRelease",
            message=message,
            warning=True,
            component=COMPONENT,
        )


def _api_message(error: ApiException) -> str:
    """The API server's own message (a Status body), shortened; never the object we sent."""
    try:
        return str(json.loads(error.body or "{}").get("message", ""))[:300]
    except (ValueError, AttributeError):
        return ""
