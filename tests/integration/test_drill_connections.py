"""Drill: abuse of the connection. Each abuser is cut off, and other clients' admissions go on meanwhile.

- slowloris: clients that connect and send nothing, send half the headers, or the headers and
  part of the body, then nothing: cut after `--request-read-timeout-seconds` (1 s here; 10 s by default);
- a client that never reads its answer (an 8 MB patch it leaves in the pipe): cut after
  `--response-write-timeout-seconds`;
- bodies over the limit: 413 at once and the connection closed, before the rest is sent.

Deadlines are polled; the bounds are generous (the tight numbers belong to `make bench`).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.strategies import REGISTRY
from tests.support import WebhookProcess, wait_for, webhook_process
from webhook.admission.review import pod_review

READ_TIMEOUT = 1.0
WRITE_TIMEOUT = 1.0
# An ordinary admission takes about a millisecond; this bounds each one while the abusers are connected.
# Wide: one abuser makes the server decide a 90,000-container pod meanwhile, and on a loaded 2-core
# machine an ordinary admission was once measured at 0.66 s. A held-up one would wait out the 1 s
# read timeouts or worse.
ORDINARY_BOUND_SECONDS = 1.5
CUT_BOUND_SECONDS = 10.0


def review(*images: str) -> bytes:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": f"c{i}", "image": x} for i, x in enumerate(images)]},
    }
    return json.dumps(pod_review(pod, namespace="default", uid=str(uuid.uuid4()))).encode()


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    with webhook_process(
        tmp_path_factory.mktemp("abuse"),
        "--registry",
        REGISTRY,
        "--log-level",
        "warning",
        f"--request-read-timeout-seconds={READ_TIMEOUT}",
        f"--response-write-timeout-seconds={WRITE_TIMEOUT}",
    ) as running:
        yield running


def cuts(webhook: WebhookProcess, reason: str) -> float:
    text = httpx.get(f"{webhook.url}/metrics", verify=webhook.ssl_context(), timeout=5).text
    for line in text.splitlines():
        if line.startswith(f'ecr_pullthrough_connections_cut_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


def tls_socket(webhook: WebhookProcess, receive_buffer: int | None = None) -> ssl.SSLSocket:
    port = int(webhook.url.rsplit(":", 1)[1])
    raw = socket.socket()
    if receive_buffer:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.settimeout(CUT_BOUND_SECONDS)
    raw.connect(("127.0.0.1", port))
    return webhook.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")


def closed_by_server(sock: ssl.SSLSocket, deadline: float) -> bool:
    """Read (and drop) until the server closes, or the deadline passes: True if it closed."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


class OrdinaryTraffic:
    """Admissions on their own connection for as long as the block runs; their latencies."""

    def __init__(self, webhook: WebhookProcess) -> None:
        self.webhook, self.latencies, self.statuses = webhook, [], []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = review("nginx:1.27", "quay.io/org/app:1")
        with httpx.Client(base_url=self.webhook.url, verify=self.webhook.ssl_context(), timeout=30) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                answer = client.post("/mutate", content=body, headers={"Content-Type": "application/json"})
                self.latencies.append(time.perf_counter() - started)
                self.statuses.append(answer.status_code)

    def __enter__(self) -> OrdinaryTraffic:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert self.statuses, "no ordinary admission ran"
        assert set(self.statuses) == {200}, set(self.statuses)
        assert max(self.latencies) < ORDINARY_BOUND_SECONDS, max(self.latencies)


def test_slowloris_connections_are_cut_without_holding_up_admissions(webhook: WebhookProcess) -> None:
    body = review("nginx:1.27")
    head = f"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    partial = [b"", b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Le", head.encode() + body[:20]]
    before = cuts(webhook, "read-timeout")
    with OrdinaryTraffic(webhook):
        sockets = []
        for index in range(30):
            sock = tls_socket(webhook)
            sock.sendall(partial[index % 3]) if partial[index % 3] else None
            sockets.append(sock)
        deadline = time.monotonic() + READ_TIMEOUT + CUT_BOUND_SECONDS
        still_open = [s for s in sockets if not closed_by_server(s, deadline)]
        assert still_open == [], f"{len(still_open)} slow clients were never cut off"
    assert cuts(webhook, "read-timeout") - before >= 30
    for sock in sockets:
        sock.close()


def test_a_client_that_never_reads_its_answer_is_cut_off(webhook: WebhookProcess) -> None:
    # ~90,000 containers in a 3 MB body: an 8 MB answer, far more than the socket buffers hold.
    body = json.dumps(
        pod_review(
            {"spec": {"containers": [{"name": "c", "image": "nginx"}] * 90_000}}, namespace="default", uid="never-read"
        ),
        separators=(",", ":"),
    ).encode()
    assert len(body) < 3 * 1024 * 1024
    before = cuts(webhook, "write-timeout")
    with OrdinaryTraffic(webhook):
        sock = tls_socket(webhook, receive_buffer=4096)
        head = (
            f"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        wait_for(
            lambda: cuts(webhook, "write-timeout") > before,
            timeout=WRITE_TIMEOUT + CUT_BOUND_SECONDS + 20,  # + deciding 90,000 containers on a busy machine
            interval=0.2,
            what="the server to cut the client that does not read",
        )
        sock.close()


def test_bodies_over_the_limit_are_refused_at_once_and_the_connection_closed(webhook: WebhookProcess) -> None:
    with OrdinaryTraffic(webhook):
        for _ in range(10):
            sock = tls_socket(webhook)
            # Declares 50 MB, sends 1 MB of it, then waits for the answer.
            sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            sock.sendall(b"Content-Length: 52428800\r\n\r\n" + b" " * 1_000_000)
            answer = b""
            deadline = time.monotonic() + CUT_BOUND_SECONDS
            while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
            assert b"connection: close" in answer.lower()
            assert closed_by_server(sock, time.monotonic() + CUT_BOUND_SECONDS)
            sock.close()
