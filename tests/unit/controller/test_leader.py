import time

from kubernetes import client

from webhook.controller.leader import LeaseElector


def elector() -> LeaseElector:
    return LeaseElector(
        client.ApiClient(),
        namespace="ns",
        name="lease",
        identity="me",
        lease_seconds=15,
        renew_deadline_seconds=10,
        retry_seconds=2,
        on_started=lambda: None,
        on_stopped=lambda: None,
    )


def test_leading_lapses_at_the_renew_deadline_even_while_a_renewal_hangs() -> None:
    lease = elector()
    assert not lease.leading()
    lease.is_leader.set()
    lease._renewed_at = time.monotonic()
    assert lease.leading()
    lease._renewed_at = time.monotonic() - 11  # the renew call started 11 s ago and has not returned
    assert not lease.leading()


def test_a_leaders_lease_calls_end_before_its_deadline() -> None:
    lease = elector()
    lease.is_leader.set()
    lease._renewed_at = time.monotonic() - 7
    connect, read = lease._timeout()  # type: ignore[misc]
    assert read <= 3.01
    assert connect <= read
    assert lease._api.api_client.configuration.retries is False  # urllib3 must not retry a timed-out read
