"""Helpers shared by the integration and end-to-end tests: free ports, polling, the webhook process."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.controlplane import build
from webhook import certs

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 (a check may fail in any way until it passes)
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}; last error: {last_error!r}")


def stop_process(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> int:
    """Send `sig`, wait up to `timeout` seconds, then kill; the exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def require_binary(name: str) -> Path:
    """The built binary for `name`; the suite never builds (`make test` does that first)."""
    path = build.binary_path(name)
    if path.is_file():
        return path
    message = f"{name} not found at {path}: run `make controlplane` to build it"
    # On CI a missing binary is a broken pipeline, never a silently skipped suite.
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass
class WebhookProcess:
    process: subprocess.Popen[bytes]
    url: str
    ca: certs.KeyPair
    cert_path: Path
    key_path: Path
    log_path: Path

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca.cert_pem.decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.process)


def serving_pair(folder: Path, ca: certs.KeyPair | None = None) -> tuple[certs.KeyPair, Path, Path]:
    ca = ca or certs.make_ca()
    leaf = certs.make_leaf(ca, "ecr-pullthrough-test", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    cert, key = folder / "tls.crt", folder / "tls.key"
    # Replace both files by rename, as a kubelet-mounted Secret changes.
    leaf.write(folder / "tls.crt.new", folder / "tls.key.new")
    os.replace(folder / "tls.key.new", key)
    os.replace(folder / "tls.crt.new", cert)
    return ca, cert, key


@contextmanager
def webhook_process(
    folder: Path, *args: str, host: str = "127.0.0.1", ca: certs.KeyPair | None = None
) -> Iterator[WebhookProcess]:
    """Run the real `ecr-pullthrough webhook` process over TLS until the block ends.

    Unless `args` name an upstream status file (or the requirement), upstreams are not
    required to be verified: most tests are about something else.
    """
    if not any(a.startswith(("--upstream-status-file", "--require-verified-upstreams")) for a in args):
        args = (*args, "--require-verified-upstreams=false")
    ca, cert, key = serving_pair(folder, ca)
    port = free_port()
    log_path = folder / "webhook.log"
    command = [sys.executable, "-m", "webhook", "webhook", "--tls-cert", str(cert), "--tls-key", str(key)]
    command += ["--host", host, "--port", str(port), *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    running = WebhookProcess(process, f"https://{host}:{port}", ca, cert, key, log_path)
    try:
        context = running.ssl_context()

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"webhook exited with {process.returncode}:\n{running.log()}")
            with (
                socket.create_connection((host, port), timeout=1) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return True

        wait_for(ready, timeout=30, what="the webhook to accept TLS connections")
        yield running
    finally:
        running.stop()
