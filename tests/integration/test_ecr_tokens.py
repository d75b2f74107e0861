"""ECR tokens through boto3 at the HTTP boundary: our fake endpoint, moto's server, and botocore's Stubber."""

import datetime

import boto3
import pytest
from botocore.stub import Stubber

from tests.fake_ecr import FakeEcr
from webhook.controller.ecr import AwsError, TokenSource, ecr_client

REGION = "us-east-1"


def source(attempts: int = 1) -> TokenSource:
    return TokenSource(ecr_client(REGION, connect_timeout=1, read_timeout=1, max_attempts=attempts))


def test_a_token_is_decoded_and_its_refresh_falls_half_way(fake: FakeEcr) -> None:
    token = source().fetch()
    assert (token.username, token.password) == ("AWS", fake.password(1))
    life = token.expires_at - token.fetched_at
    assert abs(life.total_seconds() - 12 * 3600) < 5
    assert token.refresh_at(datetime.timedelta(seconds=60)) == token.fetched_at + life / 2
    assert fake.password(1) not in repr(token)


def test_each_fetch_gets_a_new_token(fake: FakeEcr) -> None:
    tokens = source()
    assert tokens.fetch().password != tokens.fetch().password


@pytest.mark.parametrize(("mode", "code"), [("deny", "AccessDeniedException"), ("throttle", "ThrottlingException")])
def test_errors_carry_their_code(fake: FakeEcr, mode: str, code: str) -> None:
    fake.mode = mode  # type: ignore[assignment]
    with pytest.raises(AwsError) as error:
        source().fetch()
    assert error.value.code == code
    assert error.value.metric_code == code


def test_an_unreachable_endpoint_fails_fast(fake: FakeEcr) -> None:
    fake.stop()
    started = datetime.datetime.now(datetime.UTC)
    with pytest.raises(AwsError) as error:
        source(attempts=2).fetch()
    assert error.value.code == "Unreachable"
    assert (datetime.datetime.now(datetime.UTC) - started).total_seconds() < 20


def test_a_hanging_endpoint_times_out(fake: FakeEcr) -> None:
    fake.mode = "hang"
    with pytest.raises(AwsError) as error:
        source().fetch()
    assert error.value.code == "Timeout"


def test_moto_server_token_with_a_past_expiry_gets_the_refresh_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.server import ThreadedMotoServer

    from tests.support import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        # moto loads its ECR backend on the first request: seconds on a busy machine, not the 1 s of `source()`.
        token = TokenSource(ecr_client(REGION, connect_timeout=5, read_timeout=60, max_attempts=3)).fetch()
    finally:
        server.stop()
    floor = datetime.timedelta(seconds=60)
    assert token.expires_at < token.fetched_at, "moto's expiry lies in the past"
    assert token.refresh_at(floor) == token.fetched_at + floor


def test_a_response_without_authorization_data_is_an_error() -> None:
    client = boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b").client("ecr", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_response("get_authorization_token", {"authorizationData": []})
        with pytest.raises(AwsError, match="no usable authorizationData"):
            TokenSource(client).fetch()
