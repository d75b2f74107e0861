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
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from webhook.controller.ecr import AwsError, TokenSource
from webhook.controller.kube import REQUEST_TIMEOUT, Backoff, ListWatch, RateLimiter, body, record_event
from webhook.controller.metrics import ControllerMetrics
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


class Controller:
    def __init__(
        self,
        api: client.ApiClient,
        tokens: TokenSource,
        target: SecretTarget,
        *,
        metrics: ControllerMetrics,
        is_leader: Callable[[], bool],
        workers: int = 4,
        resync_seconds: float = 600,
        token_refresh_floor: datetime.timedelta = datetime.timedelta(seconds=60),
        writes: RateLimiter | None = None,
        on_token: Callable[[], None] | None = None,
    ) -> None:
        # Any: we send and receive plain dicts; the typed signatures want the generated models.
        self.core: Any = client.CoreV1Api(api)
        self.tokens, self.target, self.metrics, self.is_leader = tokens, target, metrics, is_leader
        self.workers, self.resync_seconds, self.token_refresh_floor = workers, resync_seconds, token_refresh_floor
        self.writes = writes or RateLimiter(20, 40)
        self.on_token = on_token or (lambda: None)
        self.stop = threading.Event()
        self.queue = WorkQueue()
        metrics.queue_depth.set_function(lambda: len(self.queue))
        self._lock = threading.Lock()
        self._namespaces: dict[str, dict[str, str]] = {}  # name -> labels, of namespaces that are not terminating
        self._secrets: dict[str, dict[str, Any]] = {}  # namespace -> our-named Secret
        self._in_sync: set[str] = set()
        self._reported_foreign: dict[str, str] = {}  # namespace -> resourceVersion reported
        self._token: Token | None = None
        self.token_error: str | None = None
        self._token_wanted = threading.Event()
        self.namespace_watch = ListWatch(
            "namespaces", self.core.list_namespace, self._namespaces_listed, self._namespace_event, self.stop
        )
        self.secret_watch = ListWatch(
            "secrets",
            self.core.list_secret_for_all_namespaces,
            self._secrets_listed,
            self._secret_event,
            self.stop,
            field_selector=f"metadata.name={target.name}",
        )

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> list[threading.Thread]:
        loops: list[tuple[str, Callable[[], None]]] = [
            ("watch-namespaces", self.namespace_watch.run),
            ("watch-secrets", self.secret_watch.run),
            ("tokens", self._token_loop),
            ("resync", self._resync_loop),
        ]
        loops += [(f"worker-{i}", self._work) for i in range(self.workers)]
        threads = [threading.Thread(target=run, name=name, daemon=True) for name, run in loops]
        for thread in threads:
            thread.start()
        return threads

    def shutdown(self) -> None:
        self.stop.set()
        self.queue.close()
        self._token_wanted.set()

    def leading_started(self) -> None:
        """Called when this replica becomes leader: get a token now and look at every namespace."""
        self.metrics.leader.set(1)
        self._token_wanted.set()

    def leading_stopped(self) -> None:
        self.metrics.leader.set(0)

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
        token, error = self._token, self.token_error
        valid = token is not None and token.valid(datetime.datetime.now(datetime.UTC))
        if error is not None:
            kept = f"; the secrets keep the token valid until {token.expires_at.isoformat()}" if valid and token else ""
            return error + kept
        if not valid:
            return "no valid ECR token yet"
        return None

    # -- caches fed by the watches -------------------------------------------------------------------------

    def _excluded(self, name: str, labels: Mapping[str, str]) -> bool:
        return name in self.target.excluded_names or self.target.excluded_by_labels(labels)

    def _namespaces_listed(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._namespaces = {}
            for item in items:
                self._remember_namespace(item)
            self._in_sync &= set(self._namespaces)
            names = list(self._namespaces)
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
                wanted = False
            else:
                known = name in self._namespaces
                wanted = self._remember_namespace(item) and not known
        if wanted:
            self.queue.add(name, URGENT)
        self._publish_counts()

    def _secrets_listed(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._secrets = {(i.get("metadata") or {}).get("namespace", ""): i for i in items}
        for namespace in list(self._secrets):
            self.queue.add(namespace, NORMAL)

    def _secret_event(self, kind: str, item: dict[str, Any]) -> None:
        namespace = (item.get("metadata") or {}).get("namespace", "")
        with self._lock:
            if kind == "DELETED":
                self._secrets.pop(namespace, None)
            else:
                self._remember_secret(namespace, item)
        self.queue.add(namespace, URGENT)

    def _remember_secret(self, namespace: str, item: dict[str, Any]) -> None:
        """Keep the newest copy: our own write's answer may arrive before an older watch event."""
        known = self._secrets.get(namespace)
        if known is not None and _resource_version(known) > _resource_version(item):
            return
        self._secrets[namespace] = item

    def _publish_counts(self) -> None:
        with self._lock:
            self.metrics.namespaces.set(len(self._namespaces))
            self.metrics.in_sync.set(len(self._in_sync))

    # -- tokens and resync ---------------------------------------------------------------------------------

    def _token_loop(self) -> None:
        backoff = Backoff(1, 300)
        while not self.stop.is_set():
            wait = self._refresh_in()
            self._token_wanted.wait(wait)
            self._token_wanted.clear()
            if self.stop.is_set():
                return
            if not self.is_leader():
                continue
            token = self._token
            now = datetime.datetime.now(datetime.UTC)
            if token is not None and token.valid(now) and now < token.refresh_at(self.token_refresh_floor):
                self.enqueue_all(NORMAL)  # a new leader: same token, look at every namespace
                continue
            try:
                fresh = self.tokens.fetch()
            except AwsError as error:
                self.metrics.aws_errors.labels("GetAuthorizationToken", error.metric_code).inc()
                self.token_error = f"GetAuthorizationToken failed: {error}"
                delay = backoff.next()
                log.warning(
                    "ECR token fetch failed; existing secrets stay",
                    extra={"fields": {"code": error.code, "error": error.message, "retryIn": round(delay, 1)}},
                )
                self.stop.wait(delay)
                self._token_wanted.set()
                continue
            backoff.reset()
            with self._lock:
                self._token, self.token_error = fresh, None
                self._in_sync.clear()  # every secret holds the previous token until rewritten
            self.metrics.token_expiry.set(fresh.expires_at.timestamp())
            self.metrics.last_refresh.set(fresh.fetched_at.timestamp())
            log.info(
                "ECR token fetched",
                extra={
                    "fields": {
                        "expiresAt": fresh.expires_at.isoformat(),
                        "refreshAt": fresh.refresh_at(self.token_refresh_floor).isoformat(),
                    }
                },
            )
            self.enqueue_all(NORMAL)
            self.on_token()

    def current_token(self) -> Token | None:
        return self._token

    def _refresh_in(self) -> float:
        token = self._token
        if token is None:
            return 5.0
        due = token.refresh_at(self.token_refresh_floor) - datetime.datetime.now(datetime.UTC)
        return max(due.total_seconds(), 0.0)

    def _resync_loop(self) -> None:
        while not self.stop.wait(self.resync_seconds):
            self.metrics.resyncs.inc()
            self.enqueue_all(NORMAL)

    def enqueue_all(self, priority: int) -> None:
        with self._lock:
            names = list(self._namespaces)
        for name in names:
            self.queue.add(name, priority)

    # -- reconcile -----------------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self.stop.is_set():
            namespace = self.queue.get(timeout=1)
            if namespace is None:
                continue
            try:
                retry = self.reconcile(namespace)
            except Exception:
                log.exception("reconcile failed", extra={"fields": {"namespace": namespace}})
                retry = 5.0
            finally:
                self.queue.done(namespace)
            if retry is not None:
                self.queue.add(namespace, NORMAL, delay=retry)

    def reconcile(self, namespace: str) -> float | None:
        """Make `namespace`'s secret match the current token. Returns a delay to retry after, or None."""
        if not self.is_leader():
            return None
        token = self._token
        with self._lock:
            wanted = namespace in self._namespaces
            actual = self._secrets.get(namespace)
        if not wanted or token is None:
            return None
        desired = pullsecret.desired(namespace, self.target.name, self.target.registry, token)
        if actual is not None and not pullsecret.is_ours(actual):
            self._report_foreign(namespace, actual)
            return None
        if actual is not None and pullsecret.in_sync(actual, desired):
            self._mark(namespace, True)
            log.debug("secret in sync", extra={"fields": {"namespace": namespace}})
            return None
        newer = pullsecret.expires_at(actual) if actual is not None else None
        if newer is not None and newer > token.expires_at:
            return None  # never overwrite a valid token with an older one
        if not self.writes.acquire(self.stop):
            return None
        try:
            if actual is None:
                written = body(
                    self.core.create_namespaced_secret(
                        namespace, desired, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                    )
                )
                result = "created"
            else:
                written = body(
                    self.core.replace_namespaced_secret(
                        self.target.name,
                        namespace,
                        pullsecret.updated(actual, desired),
                        _preload_content=False,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                )
                result = "updated"
        except ApiException as error:
            return self._write_failed(namespace, error)
        except (HTTPError, OSError) as error:
            self.metrics.writes.labels("error").inc()
            log.warning("secret write failed", extra={"fields": {"namespace": namespace, "error": str(error)}})
            return 2.0
        with self._lock:
            self._remember_secret(namespace, written)
        self.metrics.writes.labels(result).inc()
        self._mark(namespace, True)
        log.info(
            "secret written",
            extra={"fields": {"namespace": namespace, "result": result, "expiresAt": token.expires_at.isoformat()}},
        )
        return None

    def _write_failed(self, namespace: str, error: ApiException) -> float | None:
        if error.status == 409:  # AlreadyExists or a stale resourceVersion: look again
            self.metrics.writes.labels("conflict").inc()
            self._reread(namespace)
            return 0.1
        self.metrics.writes.labels("error").inc()
        self._mark(namespace, False)
        log.warning(
            "secret write failed",
            extra={"fields": {"namespace": namespace, "status": error.status, "reason": error.reason}},
        )
        if error.status == 404 or (error.status == 403 and "being terminated" in str(error.body or "")):
            return None  # the namespace is going away
        return 5.0

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
            self._secrets[namespace] = current

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


def _resource_version(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0
