"""The controller's view of the cluster: the namespaces that should hold the pull Secret, and ours.

Two list-watches feed it: namespaces, and Secrets listed and watched only with
`fieldSelector=metadata.name=<name>` (so RBAC can restrict every Secret verb but
`create` to that one name). A change only says *which* namespace to look at; the
reconcile decides what to do. Secrets are cached slim (no token data), except the
one in the controller's own namespace, whose token a new leader adopts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from webhook.controller.heartbeat import Heartbeats
from webhook.controller.kube import WATCH_MAX_SILENCE, ListWatch
from webhook.controller.workqueue import NORMAL, URGENT
from webhook.core import pullsecret
from webhook.core.selectors import Selector


class Caches:
    def __init__(
        self,
        core: Any,
        *,
        secret_name: str,
        home_namespace: str,
        excluded_names: frozenset[str],
        excluded_by_labels: Selector,
        stop: threading.Event,
        heartbeats: Heartbeats,
        enqueue: Callable[[str, int], None],
        forget: Callable[[str], None],
        changed: Callable[[], None],
    ) -> None:
        self.home_namespace, self.excluded_names, self.excluded_by_labels = (
            home_namespace,
            excluded_names,
            excluded_by_labels,
        )
        self.enqueue, self.forget, self.changed = enqueue, forget, changed
        self._lock = threading.Lock()
        self._namespaces: dict[str, dict[str, str]] = {}  # name -> labels, of namespaces that are not terminating
        self._secrets: dict[str, dict[str, Any]] = {}  # namespace -> our-named Secret (slim, but at home)
        # namespace -> resourceVersion of a delete seen by the watch: a write answer older than it is stale.
        self._deleted_at: dict[str, int] = {}
        self._listed: set[str] = set()
        self.synced = threading.Event()  # both caches hold a first full list
        self.namespace_watch = ListWatch(
            "namespaces",
            core.list_namespace,
            self._namespaces_listed,
            self._namespace_event,
            stop,
            shrink=_namespace_essentials,
            beat=lambda: heartbeats.beat("watch-namespaces", WATCH_MAX_SILENCE),
        )
        self.secret_watch = ListWatch(
            "secrets",
            core.list_secret_for_all_namespaces,
            self._secrets_listed,
            self._secret_event,
            stop,
            shrink=self._cached,
            beat=lambda: heartbeats.beat("watch-secrets", WATCH_MAX_SILENCE),
            field_selector=f"metadata.name={secret_name}",
        )

    # -- what the reconcile reads --------------------------------------------------------------------------

    def wanted(self, namespace: str) -> bool:
        with self._lock:
            return namespace in self._namespaces

    def secret(self, namespace: str) -> dict[str, Any] | None:
        with self._lock:
            return self._secrets.get(namespace)

    def namespaces(self) -> list[str]:
        with self._lock:
            return list(self._namespaces)

    def count(self) -> int:
        """How many namespaces should hold the Secret (a gauge updated on every event: no copy)."""
        with self._lock:
            return len(self._namespaces)

    def remember_secret(self, namespace: str, item: dict[str, Any]) -> None:
        """Keep the newest copy: our own write's answer may arrive before an older watch event,
        or after a newer delete (which must win)."""
        with self._lock:
            self._remember_secret(namespace, item)

    def not_synced_reason(self) -> str | None:
        for watch in (self.namespace_watch, self.secret_watch):
            if not watch.synced.is_set():
                return f"waiting for the first list of {watch.name}" + (
                    f": {watch.last_error}" if watch.last_error else ""
                )
        return None

    # -- fed by the watches --------------------------------------------------------------------------------

    def _excluded(self, name: str, labels: Mapping[str, str]) -> bool:
        return name in self.excluded_names or self.excluded_by_labels(labels)

    def _mark_listed(self, what: str) -> None:
        self._listed.add(what)
        if self._listed >= {"namespaces", "secrets"}:
            self.synced.set()

    def _namespaces_listed(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            before = set(self._namespaces)
            self._namespaces = {}
            for item in items:
                self._remember_namespace(item)
            gone = before - set(self._namespaces)
            names = before | set(self._namespaces)  # old keys too: one may have gone during a watch gap
            self._mark_listed("namespaces")
        for name in gone:
            self.forget(name)
        for name in names:
            self.enqueue(name, NORMAL)
        self.changed()

    def _remember_namespace(self, item: dict[str, Any]) -> bool:
        metadata = item.get("metadata") or {}
        name, labels = metadata.get("name", ""), metadata.get("labels") or {}
        terminating = (item.get("status") or {}).get("phase") == "Terminating" or metadata.get("deletionTimestamp")
        if not name or terminating or self._excluded(name, labels):
            self._namespaces.pop(name, None)
            return False
        self._namespaces[name] = labels
        return True

    def _namespace_event(self, kind: str, item: dict[str, Any]) -> None:
        name = (item.get("metadata") or {}).get("name", "")
        with self._lock:
            known = name in self._namespaces
            if kind == "DELETED":
                self._namespaces.pop(name, None)
                kept = False
            else:
                kept = self._remember_namespace(item)
        if not kept:
            self.forget(name)
        elif not known:
            self.enqueue(name, URGENT)
        self.changed()

    def _secrets_listed(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            before = set(self._secrets)
            self._secrets = {(i.get("metadata") or {}).get("namespace", ""): self._cached(i) for i in items}
            self._deleted_at.clear()  # the list is newer than any delete seen before it
            # A Secret deleted during a watch gap is in `before` only: look at it again now, not at the next resync.
            namespaces = before | set(self._secrets)
            self._mark_listed("secrets")
        for namespace in namespaces:
            self.enqueue(namespace, NORMAL)

    def _secret_event(self, kind: str, item: dict[str, Any]) -> None:
        namespace = (item.get("metadata") or {}).get("namespace", "")
        with self._lock:
            if kind == "DELETED":
                self._secrets.pop(namespace, None)
                self._deleted_at[namespace] = resource_version(item)
            else:
                self._remember_secret(namespace, item)
        self.enqueue(namespace, URGENT)

    def _cached(self, secret: dict[str, Any]) -> dict[str, Any]:
        namespace = (secret.get("metadata") or {}).get("namespace", "")
        return secret if namespace == self.home_namespace else pullsecret.slim(secret)

    def _remember_secret(self, namespace: str, item: dict[str, Any]) -> None:
        item = self._cached(item)
        version = resource_version(item)
        known = self._secrets.get(namespace)
        if known is not None and resource_version(known) > version:
            return
        if self._deleted_at.get(namespace, -1) > version:
            return
        self._deleted_at.pop(namespace, None)
        self._secrets[namespace] = item


def _namespace_essentials(namespace: dict[str, Any]) -> dict[str, Any]:
    """What the namespace cache needs: name, labels, and whether it is going away."""
    metadata = namespace.get("metadata") or {}
    return {
        "metadata": {key: metadata[key] for key in ("name", "labels", "deletionTimestamp") if key in metadata},
        "status": {"phase": (namespace.get("status") or {}).get("phase")},
    }


def resource_version(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0
