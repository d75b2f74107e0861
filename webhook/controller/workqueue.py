"""A de-duplicating, prioritised, delayable work queue of namespace names (client-go's workqueue, small).

- A name is queued at most once; adding it again keeps the earlier due time and the higher priority.
- A name being processed that is added again is processed once more after `done`, never twice at once.
- Urgent work (a new namespace, a deleted secret) goes ahead of resync work.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time

URGENT, NORMAL = 0, 1


class WorkQueue:
    def __init__(self) -> None:
        # Lazy deletion: heap entries that no longer match `_queued` are stale and skipped.
        self._delayed: list[tuple[float, int, str, int]] = []  # (due, order, name, priority)
        self._due: list[tuple[int, int, str, float]] = []  # (priority, order, name, due)
        self._queued: dict[str, tuple[int, float]] = {}  # name -> (priority, due)
        self._processing: set[str] = set()
        self._again: dict[str, int] = {}  # added while processing -> priority
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._closed = False

    def add(self, name: str, priority: int = NORMAL, delay: float = 0.0) -> None:
        with self._changed:
            if name in self._processing:
                self._again[name] = min(priority, self._again.get(name, priority))
                return
            due = time.monotonic() + max(delay, 0.0)
            current = self._queued.get(name)
            if current is not None and current <= (priority, due):
                return
            self._queued[name] = (priority, due)
            if delay > 0:
                heapq.heappush(self._delayed, (due, next(self._order), name, priority))
            else:
                heapq.heappush(self._due, (priority, next(self._order), name, due))
            self._changed.notify()

    def get(self, timeout: float) -> str | None:
        """The next due name (urgent first), or None after `timeout` or once closed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    due, order, name, priority = heapq.heappop(self._delayed)
                    heapq.heappush(self._due, (priority, order, name, due))
                while self._due:
                    priority, _, name, due = heapq.heappop(self._due)
                    if self._queued.get(name) == (priority, due):
                        del self._queued[name]
                        self._processing.add(name)
                        return name
                if now >= deadline:
                    return None
                wake = min(deadline, self._delayed[0][0]) if self._delayed else deadline
                self._changed.wait(max(wake - now, 0.001))
            return None

    def done(self, name: str) -> None:
        with self._changed:
            self._processing.discard(name)
            priority = self._again.pop(name, None)
        if priority is not None:
            self.add(name, priority)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return len(self._queued)
