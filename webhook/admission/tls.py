"""A server TLS context whose certificate follows its files: rotation without restart.

At every handshake (the SNI callback runs for each, with or without a server
name) the files' identity is compared with what was loaded, at most once a
second; when it changed, a new context is loaded and handed to that handshake.
A half-written pair (key and certificate not matching yet) is retried at the
next handshake while the old certificate keeps serving.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("ecr_pullthrough.tls")

CHECK_INTERVAL_SECONDS = 1.0


def _stamp(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    stats = [os.stat(path) for path in paths]
    return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)


def _load(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


class ReloadingContext:
    def __init__(self, cert: Path, key: Path, on_reload: Callable[[bool], None] | None = None) -> None:
        self.cert, self.key = cert, key
        self._on_reload = on_reload or (lambda ok: None)
        self._lock = threading.Lock()
        self._stamp = _stamp(cert, key)
        self._current = _load(cert, key)
        self._checked = time.monotonic()
        # The context given to the server: it serves the first certificate and
        # swaps in the newest one at each handshake.
        self.context = _load(cert, key)
        self.context.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        connection.context = self.current()

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked < CHECK_INTERVAL_SECONDS:
            return self._current
        with self._lock:
            self._checked = now
            try:
                stamp = _stamp(self.cert, self.key)
                if stamp != self._stamp:
                    self._current = _load(self.cert, self.key)
                    self._stamp = stamp
                    log.info("serving certificate reloaded", extra={"fields": {"cert": str(self.cert)}})
                    self._on_reload(True)
            except (OSError, ssl.SSLError) as error:
                log.warning(
                    "serving certificate not reloaded; the previous one stays",
                    extra={"fields": {"cert": str(self.cert), "error": str(error)}},
                )
                self._on_reload(False)
        return self._current
