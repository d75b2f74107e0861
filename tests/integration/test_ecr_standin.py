"""The node tests' ECR stand-in registry, against a small upstream: auth, prefixes, forwarding, its log."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.fake_ecr import FakeEcr
from tests.node.ecr_standin import EcrStandIn, Request
from webhook import certs

MANIFEST = b'{"schemaVersion":2}'
DIGEST = "sha256:" + "a" * 64
AGENT = "containerd/test"


class Upstream(BaseHTTPRequestHandler):
    """A registry with one manifest, `library/hello:1`, that records the paths it was asked for."""

    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Upstream.paths.append(self.path)
        if self.path == "/v2/library/hello/manifests/1":
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Docker-Content-Digest", DIGEST)
            self.send_header("Content-Length", str(len(MANIFEST)))
            self.end_headers()
            self.wfile.write(MANIFEST)
            return
        self.send_response(404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Bed:
    standin: EcrStandIn
    ecr: FakeEcr
    context: ssl.SSLContext

    def get(self, path: str, password: str | None = None, user: str = "AWS") -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(f"https://127.0.0.1:{self.standin.port}{path}", headers={"User-Agent": AGENT})
        if password is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        handler = urllib.request.HTTPSHandler(context=self.context)
        try:
            with urllib.request.build_opener(handler).open(request, timeout=10) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, dict(error.headers), error.read()


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    ecr = FakeEcr()
    ca = certs.make_ca()
    leaf = certs.make_leaf(ca, ecr.host, dns_names=(ecr.host,))
    leaf.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    # The connection goes to 127.0.0.1: the chain is checked, the name is not (the node tests check that).
    client_context.check_hostname = False
    standin = EcrStandIn(
        host=ecr.host,
        rules={"docker-hub": f"http://127.0.0.1:{upstream.server_address[1]}"},
        token_number=ecr.token_number,
        context=server_context,
        address=("127.0.0.1", 0),
    )
    standin.start()
    Upstream.paths = []
    ecr.answer("GetAuthorizationToken")
    try:
        yield Bed(standin, ecr, client_context)
    finally:
        standin.stop()
        upstream.shutdown()
        upstream.server_close()


def test_without_credentials_it_challenges_for_basic_auth(bed: Bed) -> None:
    status, headers, _ = bed.get("/v2/")
    assert status == 401
    assert headers["WWW-Authenticate"] == f'Basic realm="https://{bed.ecr.host}/",service="ecr.amazonaws.com"'


def test_an_issued_token_opens_the_registry(bed: Bed) -> None:
    status, headers, _ = bed.get("/v2/", bed.ecr.password(1))
    assert (status, headers["Docker-Distribution-API-Version"]) == (200, "registry/2.0")


@pytest.mark.parametrize(("user", "password"), [("AWS", "fake-ecr-password-2"), ("root", "fake-ecr-password-1")])
def test_a_password_never_issued_or_another_user_is_refused(bed: Bed, user: str, password: str) -> None:
    assert bed.get("/v2/docker-hub/library/hello/manifests/1", password, user)[0] == 401
    assert Upstream.paths == []


def test_a_revoked_token_is_refused_and_a_new_one_accepted(bed: Bed) -> None:
    bed.ecr.answer("GetAuthorizationToken")
    bed.ecr.revoke(1)
    assert bed.get("/v2/", bed.ecr.password(1))[0] == 401
    assert bed.get("/v2/", bed.ecr.password(2))[0] == 200


def test_a_prefix_is_served_from_its_upstream_without_the_prefix(bed: Bed) -> None:
    status, headers, body = bed.get("/v2/docker-hub/library/hello/manifests/1", bed.ecr.password(1))
    assert (status, body, headers["Docker-Content-Digest"]) == (200, MANIFEST, DIGEST)
    assert headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
    assert Upstream.paths == ["/v2/library/hello/manifests/1"]


def test_the_upstreams_404_is_passed_on(bed: Bed) -> None:
    assert bed.get("/v2/docker-hub/library/absent/manifests/1", bed.ecr.password(1))[0] == 404


def test_a_prefix_without_a_rule_is_name_unknown(bed: Bed) -> None:
    status, _, body = bed.get("/v2/quay/org/app/manifests/1", bed.ecr.password(1))
    assert status == 404
    assert json.loads(body)["errors"][0]["code"] == "NAME_UNKNOWN"
    assert Upstream.paths == []


def test_every_request_is_logged_with_its_user_and_token(bed: Bed) -> None:
    bed.get("/v2/docker-hub/library/hello/manifests/1")
    bed.get("/v2/docker-hub/library/hello/manifests/1", bed.ecr.password(1))
    assert bed.standin.pulls("library/hello") == [
        Request("GET", "/v2/docker-hub/library/hello/manifests/1", None, None, 401, AGENT),
        Request("GET", "/v2/docker-hub/library/hello/manifests/1", "AWS", 1, 200, AGENT),
    ]
