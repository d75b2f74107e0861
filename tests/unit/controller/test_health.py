"""The controller's health server on `::` answers over IPv4 and IPv6 alike (IPv6 and dual-stack clusters)."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.test_listen import has_ipv6_loopback
from webhook.controller.health import serve_health


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_every_address_serves_probes_on_ipv4_and_ipv6() -> None:
    server = serve_health("::", 0, CollectorRegistry(), lambda: "caches not listed yet")
    try:
        port = server.server_address[1]
        for host in ("127.0.0.1", "[::1]"):
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as answer:
                assert json.loads(answer.read()) == {"status": "ok"}
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=5)
            assert refused.value.code == 503
            refused.value.close()
    finally:
        server.shutdown()
        server.server_close()
