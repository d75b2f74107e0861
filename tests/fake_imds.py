"""A loopback stand-in for the EC2 instance metadata service (IMDSv2), handing out a node role's credentials.

boto3 reaches it through `AWS_EC2_METADATA_SERVICE_ENDPOINT`; the real
link-local address is never a target in the tests. It records every request,
so a test can prove that nothing asked it.
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support import free_port

ROLE = "eks-node-role"
ACCESS_KEY = "ASIANODEROLEEXAMPLE"
CREDENTIALS = "/latest/meta-data/iam/security-credentials/"


class FakeImds:
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def answer(self, method: str, path: str) -> tuple[int, bytes]:
        self.requests.append(f"{method} {path}")
        if method == "PUT" and path == "/latest/api/token":
            return 200, b"fake-imds-session-token"
        if method != "GET":
            return 405, b""
        if path == CREDENTIALS:
            return 200, ROLE.encode()
        if path == CREDENTIALS + ROLE:
            now = datetime.datetime.now(datetime.UTC)
            document = {
                "Code": "Success",
                "Type": "AWS-HMAC",
                "AccessKeyId": ACCESS_KEY,
                "SecretAccessKey": "fake-node-role-secret",
                "Token": "fake-node-role-session-token",
                "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "Expiration": (now + datetime.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            return 200, json.dumps(document).encode()
        return 404, b""

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                status, payload = fake.answer(self.command, self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = _reply

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def fake_imds() -> Iterator[FakeImds]:
    fake = FakeImds()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
