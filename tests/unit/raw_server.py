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
            if not self._read_body(conn, request):
                return
            try:
                self.behaviour(conn, self.stop)
            except OSError:
                pass  # the client went away: what a deadline is for

    @staticmethod
    def _read_body(conn: socket.socket, request: bytes) -> bool:
        """Read the request body too: a socket closed with unread bytes sends RST, and a client
        that has not read the answer yet (a loaded machine) then loses it to ECONNRESET."""
        head, _, body = request.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
        while len(body) < length:
            part = conn.recv(65536)
            if not part:
                return False
            body += part
        return True

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for thread in self.threads:
            thread.join(5)
