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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from webhook.controller.ecr import TokenSource
from webhook.controller.heartbeat import Heartbeats
from webhook.controller.kube import (
    REQUEST_TIMEOUT,
    WATCH_MAX_SILENCE,
    Backoff,
    ListWatch,
    RateLimiter,
    body,
    record_event,
)
from webhook.controller.metrics import ControllerMetrics
from webhook.controller.tokens import TokenKeeper
from webhook.controller.workqueue import NORMAL, URGENT, WorkQueue
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
    ) -> None:
        # Any: we send and receive plain dicts; the typed signatures want the generated models.
        self.core: Any = client.CoreV1Api(api)
        self.target, self.metrics, self.is_leader = target, metrics, is_leader
        self.heartbeats = heartbeats or Heartbeats()
        self.workers, self.resync_seconds = workers, resync_seconds
        self.writes = writes or RateLimiter(20, 40)
        self.on_token = on_token or (lambda: None)
        self.stop = threading.Event()
        self.queue = WorkQueue()
        metrics.queue_depth.set_function(lambda: len(self.queue))
        self._lock = threading.Lock()
        self._namespaces: dict[str, dict[str, str]] = {}  # name -> labels, of namespaces that are not terminating
        self._secrets: dict[str, dict[str, Any]] = {}  # namespace -> our-named Secret
        # namespace -> resourceVersion of a delete seen by the watch: a write answer older than it is stale.
        self._deleted_at: dict[str, int] = {}
        self._in_sync: set[str] = set()
        self._reported_foreign: dict[str, str] = {}  # namespace -> resourceVersion reported
        # namespace -> the other installation whose Secret of our name is there (a release conflict).
        self._other_instance: dict[str, str] = {}
        self._write_backoff: dict[str, Backoff] = {}  # namespace -> backoff of a write that keeps failing
        self._listed: set[str] = set()
        self.caches_synced = threading.Event()  # both caches hold a first full list
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
        self.namespace_watch = ListWatch(
            "namespaces",
            self.core.list_namespace,
            self._namespaces_listed,
            self._namespace_event,
            self.stop,
            beat=lambda: self.heartbeats.beat("watch-namespaces", WATCH_MAX_SILENCE),
        )
        self.secret_watch = ListWatch(
            "secrets",
            self.core.list_secret_for_all_namespaces,
            self._secrets_listed,
            self._secret_event,
            self.stop,
            beat=lambda: self.heartbeats.beat("watch-secrets", WATCH_MAX_SILENCE),
            field_selector=f"metadata.name={target.name}",
        )

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> list[threading.Thread]:
        loops: list[tuple[str, Callable[[], None]]] = [
            ("watch-namespaces", self.namespace_watch.run),
            ("watch-secrets", self.secret_watch.run),
            ("tokens", self.keeper.run),
            ("resync", self._resync_loop),
        ]
        loops += [(f"worker-{i}", functools.partial(self._work, f"worker-{i}")) for i in range(self.workers)]
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
        with self._lock:
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
        """None when ready; otherwise one sentence saying what is wrong."""
        for watch in (self.namespace_watch, self.secret_watch):
            if not watch.synced.is_set():
                return f"waiting for the first list of {watch.name}" + (
                    f": {watch.last_error}" if watch.last_error else ""
                )
        if not self.is_leader():
            return None  # a standby is ready to take over
        token, error = self.keeper.token, self.keeper.error
        valid = token is not None and token.valid(datetime.datetime.now(datetime.UTC))
        if error is not None:
            kept = f"; the secrets keep the token valid until {token.expires_at.isoformat()}" if valid and token else ""
            return error + kept
        if not valid:
            return "no valid ECR token yet"
        return self._conflict_reason()

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

    # -- caches fed by the watches -------------------------------------------------------------------------

    def _excluded(self, name: str, labels: Mapping[str, str]) -> bool:
        return name in self.target.excluded_names or self.target.excluded_by_labels(labels)

    def _mark_listed(self, what: str) -> None:
        self._listed.add(what)
        if self._listed >= {"namespaces", "secrets"}:
            self.caches_synced.set()

    def _namespaces_listed(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            before = set(self._namespaces)
            self._namespaces = {}
            for item in items:
                self._remember_namespace(item)
            self._in_sync &= set(self._namespaces)
            names = before | set(self._namespaces)  # old keys too: one may have gone during a watch gap
            self._mark_listed("namespaces")
        for name in names:
            self.queue.add(name, NORMAL)
        self._publish_counts()

    def _remember_namespace(self, item: dict[str, Any]) -> bool:
        metadata = item.get("metadata") or {}
        name, labels = metadata.get("name", ""), metadata.get("labels") or {}
        terminating = (item.get("status") or {}).get("phase") == "Terminating" or metadata.get("deletionTimestamp")
        if not name or terminating or self._excluded(name, labels):
            self._namespaces.pop(name, None)
            self._in_sync.discard(name)
            return False
        self._namespaces[name] = labels
        return True

    def _namespace_event(self, kind: str, item: dict[str, Any]) -> None:
        name = (item.get("metadata") or {}).get("name", "")
        with self._lock:
            if kind == "DELETED":
                self._namespaces.pop(name, None)
                self._in_sync.discard(name)
                self._write_backoff.pop(name, None)
                wanted = False
            else:
                known = name in self._namespaces
                wanted = self._remember_namespace(item) and not known
        if wanted:
            self.queue.add(name, URGENT)
        self._publish_counts()

    def _secrets_listed(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            before = set(self._secrets)
            self._secrets = {(i.get("metadata") or {}).get("namespace", ""): i for i in items}
            self._deleted_at.clear()  # the list is newer than any delete seen before it
            # A Secret deleted during a watch gap is in `before` only: look at it again now, not at the next resync.
            namespaces = before | set(self._secrets)
            self._mark_listed("secrets")
        for namespace in namespaces:
            self.queue.add(namespace, NORMAL)

    def _secret_event(self, kind: str, item: dict[str, Any]) -> None:
        namespace = (item.get("metadata") or {}).get("namespace", "")
        with self._lock:
            if kind == "DELETED":
                self._secrets.pop(namespace, None)
                self._deleted_at[namespace] = _resource_version(item)
            else:
                self._remember_secret(namespace, item)
        self.queue.add(namespace, URGENT)

    def _remember_secret(self, namespace: str, item: dict[str, Any]) -> None:
        """Keep the newest copy: our own write's answer may arrive before an older watch event,
        or after a newer delete (which must win)."""
        version = _resource_version(item)
        known = self._secrets.get(namespace)
        if known is not None and _resource_version(known) > version:
            return
        if self._deleted_at.get(namespace, -1) > version:
            return
        self._deleted_at.pop(namespace, None)
        self._secrets[namespace] = item

    def _adoptable_token(self) -> Token | None:
        """The token our own Secret in the controller's namespace holds, if any (see tokens.py)."""
        if not self.target.home_namespace:
            return None
        with self._lock:
            secret = self._secrets.get(self.target.home_namespace)
        return pullsecret.token_from(
            secret, self.target.registry, self.target.instance, datetime.datetime.now(datetime.UTC)
        )

    def _publish_counts(self) -> None:
        with self._lock:
            self.metrics.namespaces.set(len(self._namespaces))
            self.metrics.in_sync.set(len(self._in_sync))

    # -- tokens and resync ---------------------------------------------------------------------------------

    def _token_changed(self, fresh: bool) -> None:
        if fresh:
            with self._lock:
                self._in_sync.clear()  # every secret holds the previous token until rewritten
        self.enqueue_all(NORMAL)
        self.on_token()

    def _resync_loop(self) -> None:
        while not self.heartbeats.wait("resync", self.stop, self.resync_seconds):
            self.metrics.resyncs.inc()
            self.enqueue_all(NORMAL)

    def enqueue_all(self, priority: int) -> None:
        with self._lock:
            names = list(self._namespaces)
        for name in names:
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
            try:
                retry = self.reconcile(namespace)
            except Exception:
                log.exception("reconcile failed", extra={"fields": {"namespace": namespace}})
                retry = self._retry_after_failure(namespace)
            finally:
                self.queue.done(namespace)
            if retry is not None:
                self.queue.add(namespace, NORMAL, delay=retry)

    def reconcile(self, namespace: str) -> float | None:
        """Make `namespace`'s secret match the current token. Returns a delay to retry after, or None."""
        if not self.is_leader():
            return None
        token = self.keeper.token
        with self._lock:
            wanted = namespace in self._namespaces
            actual = self._secrets.get(namespace)
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
        if decision.action == "foreign" and actual is not None:
            self._report_foreign(namespace, actual)
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
                written = body(
                    self.core.replace_namespaced_secret(
                        self.target.name,
                        namespace,
                        decision.secret,
                        _preload_content=False,
                        _request_timeout=REQUEST_TIMEOUT,
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
        with self._lock:
            self._remember_secret(namespace, written)
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
            return 0.1
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
        with self._lock:
            self._remember_secret(namespace, current)

    def _mark(self, namespace: str, synced: bool) -> None:
        with self._lock:
            (self._in_sync.add if synced else self._in_sync.discard)(namespace)
        self._publish_counts()

    def _report_foreign(self, namespace: str, secret: dict[str, Any]) -> None:
        self._mark(namespace, False)
        version = _resource_version(secret)
        if self._reported_foreign.get(namespace) == str(version):
            return
        self._reported_foreign[namespace] = str(version)
        self.metrics.writes.labels("foreign").inc()
        message = (
            f"Secret {namespace}/{self.target.name} exists but is not managed by ecr-pullthrough "
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
        version = _resource_version(secret)
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


def _resource_version(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0
