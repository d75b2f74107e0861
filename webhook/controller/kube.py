"""Kubernetes plumbing for the controller: client configuration, a rate limiter, and list-then-watch.

Objects stay plain dicts (`_preload_content=False`): the controller compares
and writes a few fields and has no use for the generated models.
"""

from __future__ import annotations

import datetime
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

log = logging.getLogger("ecr_pullthrough.kube")

# Server-side watch timeout; the client-side read timeout is a little longer, so
# a dead connection is noticed within WATCH_SECONDS + READ_GRACE (kubernetes-client/python#1148).
# Short enough that a quiet watch still comes back to beat its heartbeat about once a minute.
WATCH_SECONDS = 55
READ_GRACE = 30
# Lists come in pages, so a re-list at 10,000 namespaces never holds all of them as they came.
LIST_PAGE = 500
# A watch loop beats on every event and every new watch call: it can be silent this long at most.
WATCH_MAX_SILENCE = WATCH_SECONDS + READ_GRACE + 30
CONNECT_TIMEOUT = 5
REQUEST_TIMEOUT = (CONNECT_TIMEOUT, 30)


def api_client(kubeconfig: Path | None) -> client.ApiClient:
    """From a kubeconfig file when given (or $KUBECONFIG / ~/.kube/config), else the in-cluster service account."""
    if kubeconfig is not None:
        return cast(client.ApiClient, config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]
    try:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    except config.ConfigException:
        return cast(client.ApiClient, config.new_client_from_config())  # type: ignore[no-untyped-call]


def body(response: Any) -> dict[str, Any]:
    """The JSON body of a `_preload_content=False` response."""
    return json.loads(response.data)  # type: ignore[no-any-return]


class RateLimiter:
    """A token bucket: at most `qps` calls a second on average, bursts up to `burst`."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps, self.burst = qps, burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for a token; False if `stop` was set first."""
        while not stop.is_set():
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.qps)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return True
                wait = (1 - self._tokens) / self.qps
            stop.wait(wait)
        return False


class Backoff:
    """Jittered exponential backoff: base, 2*base, ... up to cap, each times a random 0.5-1.5."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next(self) -> float:
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        return float(delay * random.uniform(0.5, 1.5))  # noqa: S311 (jitter, not cryptography)

    def reset(self) -> None:
        self.failures = 0


ListFunction = Callable[..., Any]


def _watch_events(list_fn: ListFunction, resource_version: str, **selectors: str) -> Iterator[dict[str, Any]]:
    response = list_fn(
        watch=True,
        resource_version=resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=WATCH_SECONDS,
        _preload_content=False,
        _request_timeout=(CONNECT_TIMEOUT, WATCH_SECONDS + READ_GRACE),
        **selectors,
    )
    try:
        for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
            yield json.loads(line)
    finally:
        response.release_conn()


class ListWatch:
    """List, then watch from the list's resourceVersion; bookmarks move it on; 410 Gone lists again.

    `on_list(items)` gets the full state after every (re)list, `on_event(type, object)` each
    change. Connection errors back off and resume from the last resourceVersion. Runs until
    `stop` is set.
    """

    def __init__(
        self,
        name: str,
        list_fn: ListFunction,
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        stop: threading.Event,
        beat: Callable[[], None] = lambda: None,
        shrink: Callable[[dict[str, Any]], dict[str, Any]] = lambda item: item,
        **selectors: str,
    ) -> None:
        self.name, self.list_fn, self.on_list, self.on_event, self.stop = name, list_fn, on_list, on_event, stop
        self.beat, self.shrink = beat, shrink
        self.selectors = selectors
        self.synced = threading.Event()
        self.last_error: str | None = None

    def run(self) -> None:
        backoff = Backoff(0.2, 10)
        resource_version: str | None = None
        while not self.stop.is_set():
            self.beat()
            try:
                if resource_version is None:
                    items, resource_version = self._list()
                    self.on_list(items)
                    self.synced.set()
                for event in _watch_events(self.list_fn, resource_version, **self.selectors):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            resource_version = None  # too old: list again
                            break
                        raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                    self.beat()
                    resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                    if kind != "BOOKMARK":
                        self.on_event(str(kind), self.shrink(obj))
                    if self.stop.is_set():
                        return
                self.last_error = None
                backoff.reset()
            except ApiException as error:
                if error.status == 410:
                    resource_version = None
                    continue
                self._failed(f"{error.status} {error.reason}", backoff)
            except (HTTPError, OSError, ValueError) as error:
                self._failed(f"{type(error).__name__}: {error}", backoff)

    def _list(self) -> tuple[list[dict[str, Any]], str]:
        """Every item, LIST_PAGE at a time and shrunk as each page arrives, and the list's resourceVersion.

        Pages keep one consistent snapshot (the continue token carries it), so the last page's
        resourceVersion is the whole list's. A continue token that expired (410) lists again.
        """
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            page = body(
                self.list_fn(
                    limit=LIST_PAGE,
                    _continue=token or None,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                    **self.selectors,
                )
            )
            items.extend(self.shrink(item) for item in page.get("items") or [])
            self.beat()
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items, page["metadata"]["resourceVersion"]

    def _failed(self, message: str, backoff: Backoff) -> None:
        self.last_error = message
        delay = backoff.next()
        log.warning(
            "list/watch failed; retrying", extra={"fields": {"watch": self.name, "error": message, "retryIn": delay}}
        )
        self.stop.wait(delay)


def record_event(
    core: Any, involved: dict[str, Any], *, reason: str, message: str, warning: bool, component: str
) -> None:
    """Create a core/v1 Event about `involved` (an object's metadata plus apiVersion and kind); never raises."""
    metadata = involved.get("metadata") or {}
    namespace = metadata.get("namespace", "")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata.get('name', 'object')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", "v1"),
            "kind": involved.get("kind", ""),
            "name": metadata.get("name"),
            "namespace": namespace,
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        core.create_namespaced_event(namespace, event, _request_timeout=REQUEST_TIMEOUT)
    except (ApiException, HTTPError, OSError) as error:
        log.warning("event not recorded", extra={"fields": {"reason": reason, "error": str(error)[:300]}})
