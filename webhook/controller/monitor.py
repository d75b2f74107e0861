"""The controller's side of verified upstreams: verify now and then, publish the status, say what to fix.

The status goes into a ConfigMap in the controller's namespace (the chart mounts
it into the webhook pods); `/readyz`, the metric `ecr_pullthrough_upstream_verified`
and a Kubernetes Event on each change say which upstream is unverified and why.
Verification makes one real registry request per upstream, so it runs rarely:
at start, when asked, and every `interval` (sooner while an upstream fails).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Gauge
from urllib3.exceptions import HTTPError

from webhook.controller.heartbeat import Heartbeats
from webhook.controller.kube import REQUEST_TIMEOUT, Backoff, body, record_event
from webhook.controller.secrets import COMPONENT
from webhook.controller.upstreams import Verifier
from webhook.core.upstream_status import DOCUMENT_KEY, StatusDocument

log = logging.getLogger("ecr_pullthrough.upstreams")
LOOP = "upstreams"
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
    ) -> None:
        # Any: plain dicts in and out, the typed signatures want the generated models.
        self.core: Any = client.CoreV1Api(api)
        self.verifier, self.namespace, self.configmap, self.interval = verifier, namespace, configmap, interval
        self.due = due or threading.Event()  # set it to verify now
        self.heartbeats = heartbeats or Heartbeats()
        self.last: StatusDocument | None = None
        self.verified = Gauge(
            "ecr_pullthrough_upstream_verified",
            "1 while the upstream's pull-through rule, credential and import permission are verified, else 0.",
            ["upstream"],
            registry=registry,
        )
        self.checked = Gauge(
            "ecr_pullthrough_upstream_checked_timestamp_seconds", "Last upstream verification.", registry=registry
        )

    def not_ready_reason(self) -> str | None:
        document = self.last
        if document is None:
            return None
        problems = [f"upstream {s.upstream} unverified: {s.reason}" for s in document.upstreams if not s.verified]
        return "; ".join(problems) or None

    def leading_stopped(self) -> None:
        """A standby publishes nothing: its last result and gauges go, so its readiness says standby."""
        self.last = None
        self.verified.clear()
        self.checked.set(0)

    def run(self, is_leader: Callable[[], bool], stop: threading.Event) -> None:
        retry = Backoff(30, self.interval)
        while not stop.is_set():
            delay = self.interval
            if is_leader():
                try:
                    document = self.verifier.verify()
                except Exception:  # e.g. http.client errors from an egress proxy: not OSError
                    delay = min(self.interval, retry.next())
                    log.exception("upstream verification failed; retrying", extra={"fields": {"retryIn": delay}})
                else:
                    if all(s.verified for s in document.upstreams):
                        retry.reset()
                    else:
                        delay = min(self.interval, retry.next())
                    try:
                        if is_leader():  # leadership can lapse during a slow verification
                            self._publish(document)
                    except (ApiException, HTTPError, OSError) as error:
                        log.warning("upstream status not published", extra={"fields": {"error": str(error)[:300]}})
                        delay = min(delay, 10)
            self.heartbeats.wait(LOOP, self.due, delay, MAX_SILENCE)
            self.due.clear()

    def _publish(self, document: StatusDocument) -> None:
        previous, self.last = self.last, document
        self.checked.set(document.checked_at.timestamp())
        before = {s.upstream: s for s in previous.upstreams} if previous else {}
        for status in document.upstreams:
            self.verified.labels(status.upstream).set(1 if status.verified else 0)
            old = before.get(status.upstream)
            if old is None or (old.verified, old.reason) != (status.verified, status.reason):
                log.log(
                    logging.INFO if status.verified else logging.WARNING,
                    "upstream verified" if status.verified else "upstream unverified",
                    extra={"fields": {"upstream": status.upstream, "prefix": status.prefix, "reason": status.reason}},
                )
        configmap = self._write(document)
        for status in document.upstreams:
            old = before.get(status.upstream)
            if old is None or (old.verified, old.reason) != (status.verified, status.reason):
                record_event(
                    self.core,
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": configmap.get("metadata") or {}},
                    reason="UpstreamVerified" if status.verified else "UpstreamUnverified",
                    message=f"{status.upstream}: verified"
                    if status.verified
                    else f"{status.upstream}: {status.reason}",
                    warning=not status.verified,
                    component=COMPONENT,
                )

    def _write(self, document: StatusDocument) -> dict[str, Any]:
        data = {DOCUMENT_KEY: document.to_json()}
        try:
            current = body(
                self.core.read_namespaced_config_map(
                    self.configmap, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as error:
            if error.status != 404:
                raise
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
