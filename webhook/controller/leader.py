"""Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it.

Written here because the Python client's elector neither releases the lease
on shutdown nor campaigns again after losing it (kubernetes-client/python
#2075). Expiry is judged by how long the lease record has gone unchanged as
*we* observed it, never by comparing our clock with another process's
renewTime, so clock skew between nodes does not matter.

Leadership is judged locally too: `leading()` is true only while the last
successful renewal *began* less than the renew deadline ago, and every lease
call is bounded by the deadline left, so a call that hangs cannot keep a
replica leading after another one may have taken over.
"""

from __future__ import annotations

import copy
import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from webhook.controller.kube import CONNECT_TIMEOUT, REQUEST_TIMEOUT, body

log = logging.getLogger("ecr_pullthrough.leader")


def _without_retries(api: client.ApiClient) -> client.ApiClient:
    """A client for lease calls that urllib3 does not retry: a retried read would wait out its
    timeout again and again, and keep a leader that can no longer renew believing it leads."""
    configuration = copy.copy(api.configuration)
    configuration.retries = False
    return client.ApiClient(configuration)


def _micro_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: float,
        renew_deadline_seconds: float,
        retry_seconds: float,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        beat: Callable[[], None] = lambda: None,
    ) -> None:
        # Any: we send plain dicts; the typed signatures want the generated models.
        self._api: Any = client.CoordinationV1Api(_without_retries(api))
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds, self.renew_deadline, self.retry = lease_seconds, renew_deadline_seconds, retry_seconds
        self._on_started, self._on_stopped, self._beat = on_started, on_stopped, beat
        self.is_leader = threading.Event()
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    def leading(self) -> bool:
        """True while this replica leads and its last renewal is recent enough to be sure of it.

        Checked before every leader-only write: it turns false at the renew deadline even while
        a renew call is still hanging, before any other replica can have taken the lease.
        """
        return self.is_leader.is_set() and time.monotonic() - self._renewed_at < self.renew_deadline

    def run(self, stop: threading.Event) -> None:
        """Campaign, lead, and campaign again after losing, until `stop`; then release the lease."""
        try:
            while not stop.is_set():
                self._beat()
                attempt_started = time.monotonic()
                if self._acquire_or_renew():
                    self._renewed_at = attempt_started  # the lease was renewed no earlier than this
                    if not self.is_leader.is_set():
                        self.is_leader.set()
                        log.info("became leader", extra={"fields": {"lease": self.name, "identity": self.identity}})
                        self._on_started()
                elif self.is_leader.is_set() and time.monotonic() - self._renewed_at > self.renew_deadline:
                    self._step_down("could not renew the lease in time")
                stop.wait(self.retry)
        finally:
            if self.is_leader.is_set():
                self.release()

    def _step_down(self, why: str) -> None:
        self.is_leader.clear()
        log.warning("stopped leading", extra={"fields": {"lease": self.name, "reason": why}})
        self._on_stopped()

    def _timeout(self) -> tuple[float, float] | float:
        """A leader's lease calls end before its renew deadline; a candidate's may take the usual time."""
        if not self.is_leader.is_set():
            return REQUEST_TIMEOUT
        left = self.renew_deadline - (time.monotonic() - self._renewed_at)
        return (min(CONNECT_TIMEOUT, max(left, 0.1)), max(left, 0.1))

    def _acquire_or_renew(self) -> bool:
        now = datetime.datetime.now(datetime.UTC)
        try:
            lease = body(
                self._api.read_namespaced_lease(
                    self.name, self.namespace, _preload_content=False, _request_timeout=self._timeout()
                )
            )
        except ApiException as error:
            if error.status != 404:
                log.warning("lease read failed", extra={"fields": {"error": f"{error.status} {error.reason}"}})
                return False
            return self._create(now)
        except (HTTPError, OSError) as error:
            log.warning("lease read failed", extra={"fields": {"error": str(error)}})
            return False

        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        duration = spec.get("leaseDurationSeconds") or self.lease_seconds
        if holder and holder != self.identity and time.monotonic() - self._observed_at < duration:
            if self.is_leader.is_set():
                self._step_down(f"the lease is held by {holder}")
            return False

        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        lease["spec"] = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_seconds),
            "renewTime": _micro_time(now),
            "acquireTime": spec.get("acquireTime") if holder == self.identity else _micro_time(now),
            "leaseTransitions": transitions,
        }
        return self._write(lease)

    def _create(self, now: datetime.datetime) -> bool:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_seconds),
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": 0,
            },
        }
        return self._attempt(
            "create", lambda: self._api.create_namespaced_lease(self.namespace, lease, _request_timeout=self._timeout())
        )

    def _write(self, lease: dict[str, Any]) -> bool:
        # resourceVersion in the body makes this a compare-and-swap.
        return self._attempt(
            "update",
            lambda: self._api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self._timeout()
            ),
        )

    @staticmethod
    def _attempt(what: str, write: Callable[[], object]) -> bool:
        """One lease write; a conflict (409) is a lost race between candidates, not news."""
        try:
            write()
            return True
        except ApiException as error:
            if error.status != 409:
                log.warning(f"lease {what} failed", extra={"fields": {"error": f"{error.status} {error.reason}"}})
            return False
        except (HTTPError, OSError) as error:
            log.warning(f"lease {what} failed", extra={"fields": {"error": str(error)}})
            return False

    def release(self) -> None:
        """Give the lease up at once (as client-go's ReleaseOnCancel), so a standby takes over without waiting."""
        self.is_leader.clear()
        try:
            lease = body(
                self._api.read_namespaced_lease(
                    self.name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(
                holderIdentity=None,
                leaseDurationSeconds=1,
                renewTime=_micro_time(datetime.datetime.now(datetime.UTC)),
            )
            self._api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT)
            log.info("released the lease", extra={"fields": {"lease": self.name, "identity": self.identity}})
        except (ApiException, HTTPError, OSError) as error:
            log.warning("lease release failed", extra={"fields": {"error": str(error)}})
        finally:
            self._on_stopped()
