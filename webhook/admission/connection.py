"""Deadlines uvicorn does not have: a connection is cut when its client stops sending or stops reading.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but once a client
has connected (or sent the first byte of a request) it waits forever for the rest of the
headers and body, and a response the client never reads waits forever in the write
buffer. Each such connection holds memory and an admission slot; enough of them (slowloris)
starve every other client. So, on top of uvicorn's fast httptools protocol:

- read deadline: a whole request, headers and body, must arrive within `read_timeout`
  seconds of its first byte (or of the TLS connection being made, for a client that sends
  nothing). kube-apiserver sends a review at once; its own webhook timeout is at most 30 s
  (the chart sets 3 s), so a request still arriving after that is answered to nobody.
- write deadline: a response the client does not drain within `write_timeout` seconds is
  dropped with the connection. Under TLS the answer is encrypted straight into the socket's
  buffer, so the transport rarely pauses the writer; what shows a client that does not read is
  a connection that uvicorn closed (after the answer, or idle past the keep-alive timeout)
  and that is still not gone `write_timeout` seconds later: `close` waits for the buffer to
  drain, forever if nobody reads it. So it is aborted then. A transport that does pause
  (answers queued behind an unread one) gets the same deadline.

A cut aborts the transport (no flushing to a client that does not read) and is counted.

It also sheds load: when a request's headers complete with `max_in_flight` request tasks
already in the server, an admission is answered by the shedding app instead (`shedding.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from webhook.admission.shedding import SHED_PATH

READ_TIMEOUT_REASON = "read-timeout"
WRITE_TIMEOUT_REASON = "write-timeout"


class GuardedProtocol(HttpToolsProtocol):
    read_timeout: float = 10.0
    write_timeout: float = 10.0
    max_in_flight: int = 128
    shed_app: ASGIApp | None = None

    @staticmethod
    def on_cut(reason: str) -> None:
        """Called once per connection cut, with READ_TIMEOUT_REASON or WRITE_TIMEOUT_REASON."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read()
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_read()

    def on_headers_complete(self) -> None:
        if (
            self.shed_app is not None
            and len(self.tasks) >= self.max_in_flight
            and self.url.split(b"?", 1)[0] == SHED_PATH
        ):
            # uvicorn picks `self.app` for the request it is about to start: lend it the shedding app.
            app, self.app = self.app, self.shed_app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm_read()

    def on_response_complete(self) -> None:
        # Between requests uvicorn's own keep-alive timeout applies.
        self._disarm_read()
        super().on_response_complete()
        self._arm_linger()

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._arm_linger()

    def eof_received(self) -> None:
        super().eof_received()
        self._arm_linger()

    def shutdown(self) -> None:
        super().shutdown()
        self._arm_linger()

    def _arm_linger(self) -> None:
        """A closed connection must be gone within `write_timeout`: its client read the answer by then."""
        if self.transport.is_closing() and self._write_deadline is None:
            self._write_deadline = self.loop.call_later(self.write_timeout, self._cut, WRITE_TIMEOUT_REASON)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(self.write_timeout, self._cut, WRITE_TIMEOUT_REASON)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_deadline is not None and not self.transport.is_closing():
            self._write_deadline.cancel()
            self._write_deadline = None

    def _arm_read(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._cut, READ_TIMEOUT_REASON)

    def _disarm_read(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _cut(self, reason: str) -> None:
        if reason == READ_TIMEOUT_REASON:
            self._read_deadline = None
        else:
            self._write_deadline = None
        if self.transport.is_closing() and reason == READ_TIMEOUT_REASON:
            return
        type(self).on_cut(reason)
        self.transport.abort()


def guarded_protocol(
    read_timeout: float,
    write_timeout: float,
    on_cut: Callable[[str], None],
    max_in_flight: int,
    shed_app: ASGIApp,
) -> type[GuardedProtocol]:
    """The protocol class to hand uvicorn (`Config(http=...)`), with these deadlines and this limit."""
    return type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {
            "read_timeout": read_timeout,
            "write_timeout": write_timeout,
            "on_cut": staticmethod(on_cut),
            "max_in_flight": max_in_flight,
            "shed_app": staticmethod(shed_app),
        },
    )
