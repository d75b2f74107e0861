"""ECR authorization tokens, from boto3's default credential chain (IRSA, EKS Pod Identity, environment).

boto3's own endpoint settings (`AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL_STS`)
point it elsewhere in tests; there is no hook of ours. Explicit timeouts and a
small retry budget make an unreachable ECR show up in seconds, not minutes. A
token's password is never part of a repr, a log line or an exception message.

The chain's last link, the instance role through IMDS, is cut unless allowed:
a mis-bound IRSA or Pod Identity would otherwise fall back to the node's role
silently, and that role's token would land in every namespace.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from webhook.core.token import Token

# AWS error codes we name in metrics; any other is counted as "other" (bounded labels).
KNOWN_ERROR_CODES = frozenset(
    {
        "AccessDeniedException",
        "ThrottlingException",
        "ServerException",
        "InvalidParameterException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "NoCredentials",
        "Unreachable",
        "Timeout",
    }
)


# Errors that say nothing about the account's setup and pass by themselves: throttling, AWS-side
# failures, timeouts, connection errors, and no credentials (as while an IRSA token is refreshed).
TRANSIENT_ERROR_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServerException",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "NoCredentials",
        "Unreachable",
        "Timeout",
    }
)


class AwsError(Exception):
    """A failed AWS call: `code` is bounded (see KNOWN_ERROR_CODES), `message` is safe to log.

    `transient` errors (TRANSIENT_ERROR_CODES, or an HTTP 5xx) say nothing about the setup;
    every other one (access denied, no such rule, a bad parameter) is definitive.
    """

    def __init__(self, code: str, message: str, *, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.transient = code in TRANSIENT_ERROR_CODES or status >= 500

    @property
    def metric_code(self) -> str:
        return self.code if self.code in KNOWN_ERROR_CODES else "other"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def classify(error: Exception) -> AwsError:
    """Turn a botocore failure into an AwsError with a bounded code and a message safe to log."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return AwsError(str(details.get("Code", "other")), str(details.get("Message", "")), status=status)
    name = type(error).__name__
    if "NoCredentials" in name or "PartialCredentials" in name:
        return AwsError("NoCredentials", "no AWS credentials found (IRSA, EKS Pod Identity or environment)")
    if "Timeout" in name:
        return AwsError("Timeout", str(error))
    if "Connect" in name or "EndpointConnection" in name:
        return AwsError("Unreachable", str(error))
    # Any other botocore failure (a broken response, a proxy's error page) is about the path, not the setup.
    return AwsError("other", f"{name}: {error}", status=500)


# botocore's name for the credential provider that asks IMDS for the instance role.
INSTANCE_METADATA_PROVIDER = "iam-role"


def aws_session(
    *, allow_instance_metadata: bool = False, instance_metadata_only: bool = False
) -> boto3.session.Session:
    """boto3's default credential chain, without the instance role unless `allow_instance_metadata`.

    `instance_metadata_only` (pull-secret mode node-role): the instance role and nothing else, so what
    is verified is what the node's kubelet will pull with, whatever else the environment offers.
    """
    core = botocore.session.get_session()
    resolver = core.get_component("credential_provider")
    if instance_metadata_only:
        resolver.providers = [resolver.get_provider(INSTANCE_METADATA_PROVIDER)]
    elif not allow_instance_metadata:
        resolver.remove(INSTANCE_METADATA_PROVIDER)
    return boto3.session.Session(botocore_session=core)


# Credentials a pod gets besides the node's: IRSA, EKS Pod Identity, static keys.
OTHER_CREDENTIALS = {
    "AWS_ROLE_ARN": "IRSA",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "IRSA",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "EKS Pod Identity",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "a container credential endpoint",
    "AWS_ACCESS_KEY_ID": "static keys",
}


def credentials_besides_the_node(environ: Mapping[str, str]) -> list[str]:
    """What in `environ` would give this process credentials other than the node role's, in words."""
    return [f"{name} ({what})" for name, what in OTHER_CREDENTIALS.items() if environ.get(name)]


def _config(region: str, connect_timeout: float, read_timeout: float, max_attempts: int) -> Config:
    return Config(
        region_name=region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
    )


def ecr_client(
    region: str,
    *,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
    session: boto3.session.Session | None = None,
) -> Any:
    config = _config(region, connect_timeout, read_timeout, max_attempts)
    return (session or aws_session()).client("ecr", config=config)


def sts_client(
    region: str,
    *,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
    session: boto3.session.Session | None = None,
) -> Any:
    """STS at its regional endpoint (reachable where the global one is not, e.g. through a VPC endpoint)."""
    config = _config(region, connect_timeout, read_timeout, max_attempts)
    return (session or aws_session()).client("sts", config=config)


def caller_identity(sts: Any) -> str:
    """The ARN of the principal our calls run as (STS GetCallerIdentity needs no permission)."""
    try:
        return str(sts.get_caller_identity()["Arn"])
    except (ClientError, BotoCoreError) as error:
        raise classify(error) from None
    except KeyError:
        raise AwsError("other", "GetCallerIdentity returned no Arn") from None


class TokenSource:
    def __init__(self, client: Any) -> None:
        self._client = client

    def fetch(self) -> Token:
        try:
            response = self._client.get_authorization_token()
        except (ClientError, BotoCoreError) as error:
            raise classify(error) from None
        try:
            data = response["authorizationData"][0]
            username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
            expires_at = data["expiresAt"]
        except (KeyError, IndexError, ValueError, UnicodeDecodeError):
            raise AwsError("other", "GetAuthorizationToken returned no usable authorizationData") from None
        if not password:
            raise AwsError("other", "GetAuthorizationToken returned a token without a password")
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=datetime.UTC)
        return Token(
            username=username,
            password=password,
            expires_at=expires_at,
            fetched_at=_now(),
            endpoint=str(data.get("proxyEndpoint", "")),
        )
