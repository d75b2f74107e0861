"""The pull-outcome guard's controller side: watch the kubelet's pull Events, keep each upstream's verdict.

Events rather than container statuses: a `Pulled` or `Failed` Event names the image, the
node (`source.host`) and the registry's own error, and a success is an Event too, so both
sides of the failure ratio come from one watch. A container status shows only the latest
waiting reason of each container, loses the successes, and a pod that pulled and started
leaves no trace of which registry served it. The kubelet folds repeats of one Event into a
`count`; each increment is one more outcome.

Every replica watches (a new leader then has the evidence at once); only the leader's
monitor publishes what `degradations` says. The thresholds and the reasoning live in
`core/pull_outcomes.py`.
"""

from __future__ import annotations

import collections
import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from webhook.controller.heartbeat import Heartbeats
from webhook.controller.kube import WATCH_MAX_SILENCE, ListWatch
from webhook.core.pull_outcomes import Degraded, OutcomeWindow, Thresholds, degradation, outcome, recovery_due
from webhook.core.upstream_status import Target

log = logging.getLogger("ecr_pullthrough.pullguard")
LOOP = "pull-guard"
PULL_REASONS = frozenset({"Pulled", "Failed"})
MAX_TRACKED_EVENTS = 20_000  # event uid -> count seen, oldest forgotten first
MAX_REPEATS = 20  # outcomes one Event update may add (a count that jumped after a re-list)
TICK_SECONDS = 5.0


class PullGuard:
    def __init__(
        self,
        core: Any,
        *,
        target: Target,
        thresholds: Thresholds,
        registry: CollectorRegistry,
        stop: threading.Event,
        heartbeats: Heartbeats,
        changed: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target, self.thresholds, self.stop, self.heartbeats = target, thresholds, stop, heartbeats
        self.changed, self.clock = changed, clock
        self._lock = threading.Lock()
        self._windows = {upstream: OutcomeWindow(thresholds) for upstream in target.prefixes}
        self._degraded: dict[str, Degraded] = {}
        self._seen: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.outcomes = Counter(
            "ecr_pullthrough_pull_outcomes",
            "Pulls through the cache the kubelets reported, by upstream and outcome "
            "(succeeded; failed: an error pointing at the cache).",
            ["upstream", "outcome"],
            registry=registry,
        )
        self.watch = ListWatch(
            "events",
            core.list_event_for_all_namespaces,
            self._listed,
            self._event,
            stop,
            beat=lambda: heartbeats.beat("watch-events", WATCH_MAX_SILENCE),
            shrink=_essentials,
            field_selector="involvedObject.kind=Pod",
        )

    def degradations(self, now: datetime.datetime) -> dict[str, Degraded]:
        """Each degraded upstream at `now` (the monitor publishes these)."""
        with self._lock:
            for upstream, window in self._windows.items():
                found = degradation(self._degraded.get(upstream), window, now)
                if found is None:
                    self._degraded.pop(upstream, None)
                else:
                    self._degraded[upstream] = found
            return dict(self._degraded)

    def run(self) -> None:
        """Re-judge every few seconds, and whenever a recovery falls due: a change asks for a publish."""
        published: frozenset[str] = frozenset()
        while not self.stop.is_set():
            self.heartbeats.beat(LOOP, TICK_SECONDS * 10)
            current = self.degradations(datetime.datetime.fromtimestamp(self.clock(), datetime.UTC))
            if frozenset(current) != published:
                published = frozenset(current)
                self.changed()
            with self._lock:
                due = [recovery_due(d, self._windows[u]) for u, d in current.items()]
            delay = min([TICK_SECONDS, *(max(0.5, when - self.clock()) for when in due)])
            self.stop.wait(delay)

    def _listed(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self._observe(item)

    def _event(self, kind: str, item: dict[str, Any]) -> None:
        if kind in ("ADDED", "MODIFIED"):
            self._observe(item)

    def _observe(self, item: dict[str, Any]) -> None:
        if item.get("reason") not in PULL_REASONS:
            return
        uid = str((item.get("metadata") or {}).get("uid") or "")
        count = _count(item)
        with self._lock:
            new = count - self._seen.get(uid, 0)
            if new <= 0:
                return
            self._seen[uid] = count
            self._seen.move_to_end(uid)
            while len(self._seen) > MAX_TRACKED_EVENTS:
                self._seen.popitem(last=False)
        now = self.clock()
        at = min(_when(item) or now, now)
        if at < now - self.thresholds.window_seconds:
            return
        involved = item.get("involvedObject") or {}
        source = item.get("source") or {}
        found = outcome(
            str(item.get("reason")),
            str(item.get("message") or ""),
            at=at,
            pod=f"{involved.get('namespace', '')}/{involved.get('name', '')}",
            node=str(source.get("host") or item.get("reportingInstance") or ""),
            target=self.target,
        )
        if found is None:
            return
        label = "failed" if found.failed else "succeeded"
        self.outcomes.labels(found.upstream, label).inc(min(new, MAX_REPEATS))
        with self._lock:
            for _ in range(min(new, MAX_REPEATS)):
                self._windows[found.upstream].add(found)
        if found.failed:
            log.info(
                "pull through the cache failed",
                extra={
                    "fields": {
                        "upstream": found.upstream,
                        "image": found.image,
                        "pod": found.pod,
                        "node": found.node,
                        "error": found.error,
                    }
                },
            )


def _count(item: dict[str, Any]) -> int:
    series = item.get("series") or {}
    value = series.get("count") or item.get("count") or 1
    return value if isinstance(value, int) and value > 0 else 1


def _when(item: dict[str, Any]) -> float | None:
    series = item.get("series") or {}
    for value in (series.get("lastObservedTime"), item.get("lastTimestamp"), item.get("eventTime")):
        if isinstance(value, str) and value:
            try:
                return datetime.datetime.fromisoformat(value).timestamp()
            except ValueError:
                continue
    return None


def _essentials(event: dict[str, Any]) -> dict[str, Any]:
    """What the guard reads of an Event; the rest (managedFields, annotations) is not kept."""
    if event.get("reason") not in PULL_REASONS:
        return {"reason": event.get("reason")}
    metadata = event.get("metadata") or {}
    involved = event.get("involvedObject") or {}
    return {
        "metadata": {"uid": metadata.get("uid"), "resourceVersion": metadata.get("resourceVersion")},
        "reason": event.get("reason"),
        "message": str(event.get("message") or "")[:2000],
        "count": event.get("count"),
        "series": event.get("series"),
        "lastTimestamp": event.get("lastTimestamp"),
        "eventTime": event.get("eventTime"),
        "source": event.get("source"),
        "reportingInstance": event.get("reportingInstance"),
        "involvedObject": {"namespace": involved.get("namespace"), "name": involved.get("name")},
    }
