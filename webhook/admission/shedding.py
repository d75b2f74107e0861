"""Load shedding: past `limit` requests in flight, an admission gets a 503 at once instead of a place in the queue.

The event loop serves requests in arrival order, so every admission waits for all those
ahead of it. Past a few hundred in flight that wait nears the API server's webhook timeout
(the chart sets 3 s) and every pod would wait for nothing; a fast 503 instead lets the
API server's `failurePolicy: Ignore` admit that pod unrewritten while the others keep
normal latency.

"In flight" counts the server's request tasks, created when a request's headers are parsed:
an ASGI middleware could not count them, because each task runs its admission to the end
before the next one starts. The decision is taken in the protocol (`connection.py`) as the
headers complete; this module is the answer it gives. The 503 is sent without reading the
body, so a shed request costs microseconds and no memory for its body; the connection stays
open. Only `POST /mutate` is shed; health checks and metrics never are.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

SHED_PATH = b"/mutate"
SHED_BODY = b'{"error":"overloaded: too many admissions in flight; retry or admit unchanged"}'
SHED_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(SHED_BODY)).encode())]


def shed_app(on_shed: Callable[[], None]) -> ASGIApp:
    """The ASGI app that answers a shed admission."""

    async def shed(scope: Scope, receive: Receive, send: Send) -> None:
        on_shed()
        await send({"type": "http.response.start", "status": 503, "headers": SHED_HEADERS})
        await send({"type": "http.response.body", "body": SHED_BODY})

    return shed
