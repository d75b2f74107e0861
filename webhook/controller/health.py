"""`/healthz`, `/readyz` and `/metrics` for the controller, on a small threaded HTTP server."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from webhook.listen import listen

log = logging.getLogger("ecr_pullthrough.health")


def serve_health(
    host: str,
    port: int,
    registry: CollectorRegistry,
    not_ready_reason: Callable[[], str | None],
    *,
    details: Callable[[], dict[str, object]] = dict,
    not_alive_reason: Callable[[], str | None] = lambda: None,
) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; returns the server (its `server_address` has the bound port).

    `details` adds information to /readyz's body (the AWS caller identity); only
    `not_ready_reason` decides its status code. `/healthz` fails when `not_alive_reason`
    names something (a loop that stopped beating), so the kubelet restarts the pod.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                dead = not_alive_reason()
                liveness = {"status": "ok"} if dead is None else {"status": "failing", "reason": dead}
                self._send(200 if dead is None else 503, "application/json", json.dumps(liveness).encode())
            elif self.path == "/readyz":
                reason = not_ready_reason()
                readiness: dict[str, object] = {"status": "ready"}
                if reason is not None:
                    readiness = {"status": "not ready", "reason": reason}
                document = {**readiness, **details()}
                self._send(200 if reason is None else 503, "application/json", json.dumps(document).encode())
            elif self.path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            else:
                self._send(404, "application/json", b'{"error": "not found"}')

        def _send(self, status: int, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds are not news

    # Bound by `listen` (dual-stack for `::`), then handed to the server instead of its own IPv4 socket.
    sock = listen(host, port)
    server = ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.server_address = sock.getsockname()[:2]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
