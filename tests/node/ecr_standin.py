"""A registry that answers like an ECR pull-through cache, in front of a plain upstream registry.

In everything this project depends on it behaves as ECR does:
- TLS (the caller names the certificate; the node tests serve the real ECR
  host name on 443 inside a private network namespace);
- Basic auth only, user `AWS` and a password the fake ECR API issued and has
  not revoked (`FakeEcr.token_number`); anything else gets 401 with a
  `WWW-Authenticate: Basic` challenge, as ECR answers;
- `/v2/<prefix>/<path>/...` is served from the rule's upstream as
  `/v2/<path>/...`; a prefix with no rule is `NAME_UNKNOWN`.
Every request is logged (method, path, user, token number, status), so a test
can say how each pull happened.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import shutil
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What a registry client needs back from the upstream's answer; hop-by-hop headers stay behind.
PASSED_HEADERS = ("Content-Type", "Content-Length", "Docker-Content-Digest", "Content-Range", "Accept-Ranges", "ETag")
FORWARDED_HEADERS = ("Accept", "Range")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    user: str | None  # the Basic user, None without credentials
    token: int | None  # which fake-ECR token the password was (None: none, wrong or revoked)
    status: int
    agent: str = ""  # User-Agent: containerd's pulls and the controller's probes both HEAD a manifest


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # hand redirects (a storage driver's blob URL) back to the client unchanged


class EcrStandIn:
    def __init__(
        self,
        *,
        host: str,
        rules: dict[str, str],
        token_number: Callable[[str], int | None],
        context: ssl.SSLContext,
        address: tuple[str, int] = ("127.0.0.1", 443),
    ) -> None:
        """`rules`: ECR prefix -> upstream base URL (`http://127.0.0.1:5000`)."""
        self.host, self.rules, self.token_number = host, rules, token_number
        self.context, self.address = context, address
        self.requests: list[Request] = []
        # Requests whose User-Agent contains this are refused with 403 after authentication: what a
        # node meets that the controller's probe does not (a KMS key the node role may not use, a
        # repository quota, a broken network path from the nodes).
        self.refuse_agent: str | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._opener = urllib.request.build_opener(_NoRedirect)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def pulls(self, path_part: str) -> list[Request]:
        """Logged requests for manifests or blobs whose path contains `path_part`."""
        with self._lock:
            return [
                r for r in self.requests if path_part in r.path and ("/manifests/" in r.path or "/blobs/" in r.path)
            ]

    def _log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def credentials(self, authorization: str) -> tuple[str | None, int | None]:
        if not authorization.startswith("Basic "):
            return None, None
        try:
            user, _, password = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        return user, self.token_number(password) if user == "AWS" else None

    def start(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                standin.serve(self)

            def do_HEAD(self) -> None:
                standin.serve(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(self.address, Handler)
        server.daemon_threads = True
        server.socket = self.context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        user, token = self.credentials(handler.headers.get("Authorization") or "")
        path = handler.path.split("?", 1)[0]

        def answer(status: int, document: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            body = json.dumps(document).encode()
            handler.send_response(status)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.send_header("Docker-Distribution-API-Version", "registry/2.0")
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(body)
            self._log(Request(handler.command, path, user, token, status, agent))

        agent = handler.headers.get("User-Agent") or ""
        if token is None:
            challenge = f'Basic realm="https://{self.host}/",service="ecr.amazonaws.com"'
            answer(401, {"errors": [{"code": "DENIED", "message": "Not Authorized"}]}, {"WWW-Authenticate": challenge})
            return
        if path in ("/v2", "/v2/"):
            answer(200, {})
            return
        if self.refuse_agent is not None and self.refuse_agent in agent:
            message = "User is not authorized to perform: kms:Decrypt on the repository's key"
            answer(403, {"errors": [{"code": "DENIED", "message": message}]})
            return
        prefix, _, rest = path.removeprefix("/v2/").partition("/")
        upstream = self.rules.get(prefix)
        if upstream is None or not rest:
            message = f"The repository with name '{path.removeprefix('/v2/')}' does not exist in the registry"
            answer(404, {"errors": [{"code": "NAME_UNKNOWN", "message": message}]})
            return
        self._forward(handler, f"{upstream}/v2/{rest}", Request(handler.command, path, user, token, 0, agent))

    def _forward(self, handler: BaseHTTPRequestHandler, url: str, logged: Request) -> None:
        headers = {name: value for name in FORWARDED_HEADERS if (value := handler.headers.get(name))}
        # Several Accept headers are one list to the upstream.
        accepts = handler.headers.get_all("Accept") or []
        if accepts:
            headers["Accept"] = ", ".join(accepts)
        request = urllib.request.Request(url, method=handler.command, headers=headers)
        try:
            upstream = self._opener.open(request, timeout=30)
        except urllib.error.HTTPError as error:
            upstream = error
        with upstream:
            status = upstream.status if hasattr(upstream, "status") else upstream.code
            handler.send_response(status)
            for name in PASSED_HEADERS:
                value = upstream.headers.get(name)
                if value is not None:
                    handler.send_header(name, value)
            if upstream.headers.get("Location"):
                handler.send_header("Location", upstream.headers["Location"])
            if upstream.headers.get("Content-Length") is None:
                handler.send_header("Connection", "close")
                handler.close_connection = True
            handler.send_header("Docker-Distribution-API-Version", "registry/2.0")
            handler.end_headers()
            if handler.command != "HEAD":
                shutil.copyfileobj(upstream, handler.wfile)
        self._log(dataclasses.replace(logged, status=status))
