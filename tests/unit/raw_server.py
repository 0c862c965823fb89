"""A raw HTTP server on a thread, for tests of what httpx does when a server misbehaves byte by byte."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

__all__ = ["Behaviour", "RawServer"]

# What the server does on a connection once it has read the request head; `stop` is set at close.
Behaviour = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """Accepts connections on a free port and runs `behaviour` on each after reading the request."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                part = conn.recv(4096)
                if not part:
                    return
                request += part
            try:
                self.behaviour(conn, self.stop)
            except OSError:
                pass  # the client went away: what a deadline is for

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for thread in self.threads:
            thread.join(5)
