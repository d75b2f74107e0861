"""A TCP proxy on 127.0.0.1 that can stall: it keeps every connection open but forwards nothing.

Put between one controller and the API server (TLS passes through untouched), it makes that
controller's calls hang as they do behind a half-dead network path, without touching the
API server or the other replicas.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support import free_port


class StallProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.flowing = threading.Event()
        self.flowing.set()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._threads: list[threading.Thread] = []

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def start(self) -> None:
        self._listener.settimeout(0.2)
        self._spawn(self._accept)

    def close(self) -> None:
        self._stop.set()
        self.flowing.set()
        self._listener.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._spawn(self._pump, client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector, client, upstream:
            for end in peer:
                selector.register(end, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    self.flowing.wait()  # stalled: hold the bytes, keep the connection
                    if self._stop.is_set():
                        return
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(65536)
                        if not data:
                            return
                        peer[source].sendall(data)
                    except OSError:
                        return


@contextmanager
def stall_proxy(target_port: int) -> Iterator[StallProxy]:
    proxy = StallProxy(target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
