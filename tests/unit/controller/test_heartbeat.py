import binascii
import threading

import pytest

from webhook.controller import heartbeat
from webhook.controller.heartbeat import Heartbeats


def test_a_silent_loop_is_overdue_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(heartbeat.time, "monotonic", lambda: clock[0])
    beats = Heartbeats()
    beats.beat("tokens", max_silence=90)
    beats.beat("watch-secrets", max_silence=200)
    assert beats.overdue() == []
    clock[0] += 120
    assert beats.overdue() == ["tokens silent for 120s"]
    beats.beat("tokens", max_silence=90)
    assert beats.overdue() == []


def test_a_loop_that_raises_is_restarted_not_ended() -> None:
    beats, stop, calls = Heartbeats(), threading.Event(), []

    def loop() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise binascii.Error("a damaged TLS Secret")  # ended the certificate loop before
        stop.set()

    thread = threading.Thread(target=beats.guarded("certificates", loop, stop))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(calls) == 2
    assert beats.overdue() == []


def test_wait_returns_when_the_event_is_set_and_beats_meanwhile() -> None:
    beats, event = Heartbeats(), threading.Event()
    event.set()
    assert beats.wait("resync", event, 3600)
    assert not beats.wait("resync", threading.Event(), 0)
    assert beats.overdue() == []
