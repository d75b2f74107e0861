"""Load shedding: past `limit` admissions in flight, answer 503 at once instead of queueing.

The event loop serves requests in arrival order, so every admission waits for all those
ahead of it. Past a few hundred in flight that wait nears the API server's webhook timeout
(the chart sets 3 s) and every pod would wait for nothing; a fast 503 instead lets the
API server's `failurePolicy: Ignore` admit that pod unrewritten while the others keep
normal latency. The 503 is sent before the body is read, so a shed request costs
microseconds and no memory for its body; the connection stays open.

Only `POST /mutate` counts; health checks and metrics are never shed.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

SHED_BODY = b'{"error":"overloaded: too many admissions in flight; retry or admit unchanged"}'
SHED_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(SHED_BODY)).encode())]


class InFlightLimit:
    """ASGI middleware: at most `limit` concurrent requests to `path`."""

    def __init__(self, app: ASGIApp, *, limit: int, path: str, on_shed: Callable[[], None]) -> None:
        self.app, self.limit, self.path, self.on_shed = app, limit, path, on_shed
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.on_shed()
            await send({"type": "http.response.start", "status": 503, "headers": SHED_HEADERS})
            await send({"type": "http.response.body", "body": SHED_BODY})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
