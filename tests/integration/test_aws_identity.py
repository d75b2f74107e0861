"""Whose credentials the controller uses: STS GetCallerIdentity, and no silent fallback to the node's role."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_ecr import ACCESS_KEY, FakeEcr
from tests.fake_imds import ACCESS_KEY as NODE_ACCESS_KEY
from tests.fake_imds import ROLE, FakeImds, fake_imds
from webhook.controller.ecr import (
    AwsError,
    TokenSource,
    aws_session,
    caller_identity,
    credentials_besides_the_node,
    ecr_client,
    sts_client,
)

REGION = "us-east-1"
LIMITS = {"connect_timeout": 1.0, "read_timeout": 2.0}


def test_the_caller_identity_is_the_signing_principal(fake: FakeEcr) -> None:
    sts = sts_client(REGION, max_attempts=1, **LIMITS)
    assert caller_identity(sts) == "arn:aws:sts::123456789012:assumed-role/ecr-pullthrough/irsa"
    assert fake.identity_calls == 1


def test_an_unknown_key_is_an_error_with_its_code(fake: FakeEcr) -> None:
    fake.principals.clear()
    with pytest.raises(AwsError) as error:
        caller_identity(sts_client(REGION, max_attempts=1, **LIMITS))
    assert error.value.code == "InvalidClientTokenId"


def test_moto_server_answers_get_caller_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.server import ThreadedMotoServer

    from tests.support import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        arn = caller_identity(sts_client(REGION, max_attempts=1, **LIMITS))
    finally:
        server.stop()
    assert arn.startswith("arn:aws:")


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: FakeEcr) -> Iterator[FakeImds]:
    """A pod whose IRSA is mis-bound: no credentials but the node's, from a loopback IMDS."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", fake.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", fake.url)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with fake_imds() as imds:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
        fake.principals["ASIANODEROLEEXAMPLE"] = f"arn:aws:sts::123456789012:assumed-role/{ROLE}/i-0123456789abcdef0"
        yield imds


def test_by_default_the_node_role_is_never_asked_for(node: FakeImds, fake: FakeEcr) -> None:
    session = aws_session()
    with pytest.raises(AwsError) as error:
        caller_identity(sts_client(REGION, session=session, max_attempts=1, **LIMITS))
    assert error.value.code == "NoCredentials"
    with pytest.raises(AwsError) as error:
        TokenSource(ecr_client(REGION, session=session, max_attempts=1, **LIMITS)).fetch()
    assert error.value.code == "NoCredentials"
    assert node.requests == []
    assert fake.tokens_issued == 0


def test_allowed_the_node_role_is_used_and_shows_as_the_identity(node: FakeImds, fake: FakeEcr) -> None:
    session = aws_session(allow_instance_metadata=True)
    arn = caller_identity(sts_client(REGION, session=session, max_attempts=1, **LIMITS))
    assert arn == f"arn:aws:sts::123456789012:assumed-role/{ROLE}/i-0123456789abcdef0"
    assert any(request.startswith("GET /latest/meta-data/iam/security-credentials/") for request in node.requests)


def test_in_node_role_mode_the_instance_role_alone_is_used_whatever_else_the_environment_offers(
    node: FakeImds, fake: FakeEcr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is verified must be what the node's kubelet pulls with: the node role, not the pod's keys."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-for-tests")
    session = aws_session(instance_metadata_only=True)
    arn = caller_identity(sts_client(REGION, session=session, max_attempts=1, **LIMITS))
    assert arn == f"arn:aws:sts::123456789012:assumed-role/{ROLE}/i-0123456789abcdef0"
    TokenSource(ecr_client(REGION, session=session, max_attempts=1, **LIMITS)).fetch()
    assert fake.token_principals == {1: NODE_ACCESS_KEY}
    # The ordinary chain, in the same environment, takes the pod's keys: the difference is the point.
    TokenSource(ecr_client(REGION, session=aws_session(), max_attempts=1, **LIMITS)).fetch()
    assert fake.token_principals[2] == ACCESS_KEY


def test_credentials_besides_the_node_are_named() -> None:
    assert credentials_besides_the_node({"AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "false"}) == []
    irsa = {"AWS_ROLE_ARN": "arn:aws:iam::1:role/x", "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token"}
    assert credentials_besides_the_node(irsa) == ["AWS_ROLE_ARN (IRSA)", "AWS_WEB_IDENTITY_TOKEN_FILE (IRSA)"]
    pod_identity = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials"}
    assert credentials_besides_the_node(pod_identity) == ["AWS_CONTAINER_CREDENTIALS_FULL_URI (EKS Pod Identity)"]


def test_node_role_mode_with_irsa_bound_stops_at_start_naming_the_setting(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_PULLTHROUGH_"))}
    environment.update(AWS_ROLE_ARN="arn:aws:iam::123456789012:role/x", AWS_WEB_IDENTITY_TOKEN_FILE=str(tmp_path))
    command = [
        sys.executable,
        "-m",
        "webhook",
        "controller",
        "--registry",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
    ]
    command += ["--pull-secret-mode", "node-role", "--kubeconfig", str(tmp_path / "unused")]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        "ecr-pullthrough controller: invalid setting --node-role-credentials (ECR_PULLTHROUGH_NODE_ROLE_CREDENTIALS): "
        "instance-metadata verifies as the node role, but this pod also has AWS_ROLE_ARN (IRSA), "
        "AWS_WEB_IDENTITY_TOKEN_FILE (IRSA): remove that binding, or set mirrored-role"
    ), result.stderr
