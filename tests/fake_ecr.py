"""A small local ECR endpoint speaking the AWS JSON protocol, for the controller's tests.

moto stands for ECR where it serves, but its token never changes and its
expiry lies in 2015, so a refresh cannot be observed with it. This one issues
a new token and expiry on every call and can be told to fail, throttle or
hang. boto3 reaches it through `AWS_ENDPOINT_URL_ECR`, with no hook of ours.

Its tokens also open the ECR stand-in registry of the node tests
(tests/node/ecr_standin.py): `token_number` says which issued, unrevoked token
a password is, and `revoke` withdraws one, as a rotation does.

It also answers STS GetCallerIdentity (the query protocol, through
`AWS_ENDPOINT_URL_STS`) with the principal of the access key that signed the
request, as STS does.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from xml.sax.saxutils import escape

from tests.support import free_port

TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
Mode = Literal["ok", "deny", "throttle", "hang"]
ACCESS_KEY = "AKIDEXAMPLE"
# The access key id in a SigV4 Authorization header: `Credential=<key>/<date>/<region>/<service>/aws4_request`.
SIGNED_BY = re.compile(r"Credential=([^/]+)/")


class FakeEcr:
    def __init__(self, account: str = "123456789012", region: str = "us-east-1") -> None:
        self.account, self.region = account, region
        self.port = free_port()
        self.mode: Mode = "ok"
        self.lifetime_seconds = 12 * 3600.0
        self.calls: list[str] = []
        self.tokens_issued = 0
        self.token_principals: dict[int, str] = {}  # token number -> the access key that asked for it
        self.revoked: set[int] = set()  # numbers of tokens withdrawn (see revoke)
        # Pull-through cache rules by ECR prefix: upstream registry URL and, where needed, a credential.
        self.rules: dict[str, dict[str, str]] = {
            "docker-hub": {
                "upstreamRegistryUrl": "registry-1.docker.io",
                "credentialArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/hub",
            },
            "github": {
                "upstreamRegistryUrl": "ghcr.io",
                "credentialArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/gh",
            },
            "quay": {"upstreamRegistryUrl": "quay.io"},
        }
        # STS: the principal behind each access key; a key not listed is refused.
        self.principals: dict[str, str] = {ACCESS_KEY: f"arn:aws:sts::{account}:assumed-role/ecr-pullthrough/irsa"}
        self.identity_calls = 0
        self.invalid_credentials: set[str] = set()  # prefixes whose credential fails validation
        self.import_denied: set[str] = set()  # prefixes whose first pull is refused (no BatchImportUpstreamImage)
        self.manifests: list[str] = []  # registry paths asked for
        # The registry answers with a broken status line, as a misbehaving egress proxy may:
        # http.client raises BadStatusLine, which is not an OSError.
        self.registry_garbage = False
        self.registry_ids: set[str] = set()  # registryId named by each pull-through-cache call
        self.token_denied = False  # GetAuthorizationToken alone is refused: tokens cannot be renewed
        self.throttled: set[str] = set()  # operations answered with ThrottlingException
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """What a process needs to reach this endpoint with boto3's default chain."""
        return {
            "AWS_ENDPOINT_URL_ECR": self.url,
            "AWS_ENDPOINT_URL_STS": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": "fake-secret-for-tests",
            "AWS_EC2_METADATA_DISABLED": "true",
            # The controller probes the configured registry's API; here, this fake's.
            "ECR_PULLTHROUGH_REGISTRY_API_URL": self.url,
        }

    @property
    def host(self) -> str:
        """The registry host name of this account and region, as ECR names it."""
        return f"{self.account}.dkr.ecr.{self.region}.amazonaws.com"

    def password(self, n: int) -> str:
        return f"fake-ecr-password-{n}"

    def token_number(self, password: str) -> int | None:
        """Which issued, unrevoked token `password` belongs to (None: not one of ours, or revoked)."""
        for n in range(1, self.tokens_issued + 1):
            if password == self.password(n):
                return None if n in self.revoked else n
        return None

    def revoke(self, *numbers: int) -> None:
        """Withdraw tokens: the stand-in registry refuses them from now on (default: all issued so far)."""
        self.revoked.update(numbers or range(1, self.tokens_issued + 1))

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                if fake.registry_garbage:
                    self.wfile.write(b"NOT-HTTP garbage\r\n\r\n")
                    self.close_connection = True
                    return
                status = fake.registry(self.path, self.headers.get("Authorization") or "")
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = self.rfile.read(length)
                if not self.headers.get("X-Amz-Target"):  # the query protocol: STS
                    status, xml = fake.sts(request, self.headers.get("Authorization") or "")
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    self.wfile.write(xml)
                    return
                operation = (self.headers.get("X-Amz-Target") or "").removeprefix(TARGET_PREFIX)
                fake.calls.append(operation)
                signed = SIGNED_BY.search(self.headers.get("Authorization") or "")
                status, document = fake.answer(operation, request, signed.group(1) if signed else "")
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the port: connections are refused, as for an unreachable ECR."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def answer(self, operation: str, body: bytes = b"", signed_by: str = "") -> tuple[int, dict[str, Any]]:
        if self.mode == "hang":
            self._release.wait(60)
        if self.mode == "deny":
            return 400, {"__type": "AccessDeniedException", "message": "User is not authorized to perform ecr:X"}
        if self.mode == "throttle":
            return 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
        if operation in self.throttled:
            return 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
        if operation == "GetAuthorizationToken" and self.token_denied:
            return 400, {"__type": "AccessDeniedException", "message": "not authorized to ecr:GetAuthorizationToken"}
        if operation == "GetAuthorizationToken":
            self.tokens_issued += 1
            self.token_principals[self.tokens_issued] = signed_by
            secret = base64.b64encode(f"AWS:{self.password(self.tokens_issued)}".encode()).decode()
            return 200, {
                "authorizationData": [
                    {
                        "authorizationToken": secret,
                        "expiresAt": time.time() + self.lifetime_seconds,
                        # As ECR answers: the registry of the caller's account. (The controller's manifest
                        # probes go to ECR_PULLTHROUGH_REGISTRY_API_URL, this fake, unless a test says otherwise.)
                        "proxyEndpoint": f"https://{self.host}",
                    }
                ]
            }
        if operation in ("DescribePullThroughCacheRules", "ValidatePullThroughCacheRule"):
            self.registry_ids.add(json.loads(body or b"{}").get("registryId", "<none>"))
        if operation == "DescribePullThroughCacheRules":
            return 200, {
                "pullThroughCacheRules": [
                    {"ecrRepositoryPrefix": prefix, "registryId": self.account, **rule}
                    for prefix, rule in self.rules.items()
                ]
            }
        if operation == "ValidatePullThroughCacheRule":
            prefix = json.loads(body or b"{}").get("ecrRepositoryPrefix", "")
            if prefix not in self.rules:
                return 400, {"__type": "PullThroughCacheRuleNotFoundException", "message": f"no rule {prefix}"}
            valid = prefix not in self.invalid_credentials
            return 200, {
                "ecrRepositoryPrefix": prefix,
                "registryId": self.account,
                **self.rules[prefix],
                "isValid": valid,
                "failure": "" if valid else "Invalid username or password for the upstream registry",
            }
        return 400, {"__type": "InvalidParameterException", "message": f"{operation} is not faked"}

    def sts(self, body: bytes, authorization: str) -> tuple[int, bytes]:
        """STS GetCallerIdentity: the principal of the signing access key (no permission needed)."""
        self.identity_calls += 1
        signed = SIGNED_BY.search(authorization)
        principal = self.principals.get(signed.group(1)) if signed else None
        if b"Action=GetCallerIdentity" not in body or principal is None:
            error = (
                "<Code>InvalidClientTokenId</Code>"
                "<Message>The security token included in the request is invalid.</Message>"
            )
            return 403, f"<ErrorResponse><Error><Type>Sender</Type>{error}</Error></ErrorResponse>".encode()
        result = f"<Arn>{escape(principal)}</Arn><UserId>AROAEXAMPLE:session</UserId><Account>{self.account}</Account>"
        return 200, (
            '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<GetCallerIdentityResult>{result}</GetCallerIdentityResult>"
            "<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>"
            "</GetCallerIdentityResponse>"
        ).encode()

    def registry(self, path: str, authorization: str) -> int:
        """The registry API of the ECR host: HEAD /v2/<prefix>/<path>/manifests/<reference>."""
        self.manifests.append(path)
        if self.mode != "ok":
            return 503
        try:
            decoded = base64.b64decode(authorization.removeprefix("Basic "), validate=True).decode()
        except ValueError:
            return 401
        user, _, password = decoded.partition(":")
        if not authorization.startswith("Basic ") or user != "AWS" or self.token_number(password) is None:
            return 401
        prefix = path.removeprefix("/v2/").split("/", 1)[0]
        if prefix not in self.rules:
            return 404
        if prefix in self.import_denied:
            return 403
        return 200


@contextmanager
def fake_ecr() -> Iterator[FakeEcr]:
    fake = FakeEcr()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
