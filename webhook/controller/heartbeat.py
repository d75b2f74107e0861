"""Liveness for the controller's loops: each beats while it works, and `/healthz` fails when one falls silent.

A loop whose thread died, or that hangs in a call without a timeout, stops beating;
`/healthz` then answers 503 naming it, and the kubelet restarts the pod. Every loop
runs under `guarded`, which logs and backs off on any exception instead of letting the
thread end, and waits with `wait`, which beats at least every BEAT_SECONDS.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from webhook.controller.kube import Backoff

log = logging.getLogger("ecr_pullthrough.controller")

# A loop beats at least this often while it waits.
BEAT_SECONDS = 30.0
# Silence allowed before a loop counts as dead: two missed beats, plus time for one slow API call.
DEFAULT_MAX_SILENCE = 2 * BEAT_SECONDS + 30


class Heartbeats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: dict[str, tuple[float, float]] = {}  # name -> (last beat, silence allowed)

    def beat(self, name: str, max_silence: float = DEFAULT_MAX_SILENCE) -> None:
        with self._lock:
            self._loops[name] = (time.monotonic(), max_silence)

    def overdue(self) -> list[str]:
        """Loops silent for longer than they may be, with how long."""
        now = time.monotonic()
        with self._lock:
            return [
                f"{name} silent for {now - last:.0f}s"
                for name, (last, allowed) in sorted(self._loops.items())
                if now - last > allowed
            ]

    def wait(self, name: str, event: threading.Event, seconds: float, max_silence: float = DEFAULT_MAX_SILENCE) -> bool:
        """`event.wait(seconds)`, beating for `name` at least every BEAT_SECONDS; True if the event was set."""
        deadline = time.monotonic() + max(seconds, 0.0)
        while True:
            self.beat(name, max_silence)
            left = deadline - time.monotonic()
            if left <= 0:
                return event.is_set()
            if event.wait(min(left, BEAT_SECONDS)):
                return True

    def guarded(self, name: str, loop: Callable[[], None], stop: threading.Event) -> Callable[[], None]:
        """A thread target that runs `loop` until `stop`, restarting it after any exception, with backoff."""

        def run() -> None:
            backoff = Backoff(1, 60)
            while not stop.is_set():
                self.beat(name)
                try:
                    loop()
                    return
                except Exception:
                    delay = backoff.next()
                    log.exception("loop failed; restarting it", extra={"fields": {"loop": name, "retryIn": delay}})
                    self.wait(name, stop, delay)

        return run
