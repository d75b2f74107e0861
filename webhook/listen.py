"""Listening sockets for both processes: `::` means every address, IPv6 and IPv4, wherever the node allows.

The chart binds `::` by default so that probes and the API server reach the pod on IPv4, IPv6 and
dual-stack clusters alike. On a node whose kernel has IPv6 switched off (`ipv6.disable=1`), an IPv6
socket cannot even be created; there `::` falls back to `0.0.0.0`, and says so in the log.
"""

from __future__ import annotations

import errno
import logging
import socket

log = logging.getLogger("ecr_pullthrough.listen")

EVERY_ADDRESS = "::"
EVERY_IPV4_ADDRESS = "0.0.0.0"  # noqa: S104 - the fallback of `::`, asked for by the operator
# The kernel's answers when IPv6 is missing or switched off on the node.
NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})
BACKLOG = 2048  # uvicorn's default


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on `host:port` (port 0: any free port).

    `::` listens dual-stack (IPv4 arrives as IPv4-mapped addresses), whatever the node's
    `net.ipv6.bindv6only`, and falls back to IPv4 only where IPv6 is unavailable. Any other
    host is bound exactly as given, IPv4 or IPv6.
    """
    if host == EVERY_ADDRESS:
        try:
            return socket.create_server(
                (host, port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=BACKLOG, reuse_port=False
            )
        except OSError as error:
            if error.errno not in NO_IPV6:
                raise
            log.warning(
                "IPv6 is unavailable on this node: listening on IPv4 only",
                extra={"fields": {"host": host, "fallback": EVERY_IPV4_ADDRESS, "error": str(error)}},
            )
            host = EVERY_IPV4_ADDRESS
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def bound_address(sock: socket.socket) -> str:
    """`host:port` of a listening socket, IPv6 hosts in brackets (for logs)."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
