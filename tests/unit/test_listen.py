"""`listen`: `::` serves IPv6 and IPv4 on one socket; any other host is bound exactly as given."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from webhook.listen import bound_address, listen

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def listening(host: str) -> Iterator[socket.socket]:
    with closing(listen(host, 0)) as sock:
        yield sock


def accepts(sock: socket.socket, client_host: str) -> bool:
    """Whether a TCP connection from this process to `client_host` reaches `sock`."""
    port = sock.getsockname()[1]
    family = socket.AF_INET6 if ":" in client_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(2)
        try:
            client.connect((client_host, port))
        except OSError:
            return False
    connection, _ = sock.accept()
    connection.close()
    return True


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_every_address_serves_ipv6_and_ipv4_on_one_socket() -> None:
    with listening("::") as sock:
        sock.settimeout(2)
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        assert accepts(sock, "::1")
        assert accepts(sock, "127.0.0.1")
        assert bound_address(sock).startswith("[::]:")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_explicit_host_is_bound_exactly() -> None:
    with listening("127.0.0.1") as ipv4, listening("::1") as ipv6:
        ipv4.settimeout(2)
        ipv6.settimeout(2)
        assert accepts(ipv4, "127.0.0.1")
        assert not accepts(ipv4, "::1")
        assert accepts(ipv6, "::1")
        assert not accepts(ipv6, "127.0.0.1")
        assert bound_address(ipv4).startswith("127.0.0.1:")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_every_address_still_serves_ipv4_on_a_node_with_ipv6_switched_off() -> None:
    # A private network namespace with IPv6 disabled by sysctl, as some EKS node groups are.
    script = (
        "import socket, sys; from webhook.listen import listen\n"
        "sock = listen('::', 0); sock.settimeout(2)\n"
        "client = socket.create_connection(('127.0.0.1', sock.getsockname()[1]), timeout=2)\n"
        "sock.accept(); print('served')\n"
    )
    setup = "ip link set lo up && sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.lo.disable_ipv6=1"
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", f'{setup} && exec "$0" -c "$1"', sys.executable, script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "served\n"
