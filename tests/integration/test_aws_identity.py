"""Whose credentials the controller uses: STS GetCallerIdentity, and no silent fallback to the node's role."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_ecr import FakeEcr
from tests.fake_imds import ROLE, FakeImds, fake_imds
from webhook.controller.ecr import AwsError, TokenSource, aws_session, caller_identity, ecr_client, sts_client

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
