"""A TCP proxy in front of a real redis-server that counts the round trips of named clients.

A round trip is what a client sends before it reads the answer: one command, one pipeline, or one
script. On a connection that is simply each run of client bytes that follows an answer (or the
start): a client sends its next request only after reading the last reply, and a pipeline goes out
in one write. The proxy parses the RESP commands of those runs, so a test can see what each trip
was (an EVALSHA is named after our Lua script with that SHA1).

Only connections that name themselves with CLIENT SETNAME starting with `name_prefix` are counted
(llmpool's worker clients do: llmpool.resources); Celery's broker connections pass uncounted.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field
from importlib.resources import files

from llmpool.dev.redis_server import free_port
from llmpool.scripts import lua_source

__all__ = ["Trip", "TripCounter", "script_names"]

HANDSHAKE = (b"HELLO", b"AUTH", b"PING", b"CLIENT")  # what redis-py may send before CLIENT SETNAME


@dataclass
class Trip:
    """One round trip: its commands (each a list of arguments), when it was sent, on which connection."""

    conn: int
    at: float
    commands: list[list[bytes]] = field(default_factory=list)

    def names(self, scripts: dict[str, str]) -> list[str]:
        """Each command's name; an EVALSHA is the name of our script with that SHA1."""
        out = []
        for cmd in self.commands:
            name = cmd[0].decode().upper()
            if name == "EVALSHA" and len(cmd) > 1:
                name = scripts.get(cmd[1].decode(), "EVALSHA?")
            out.append(name)
        return out

    def mentions(self, text: str) -> bool:
        needle = text.encode()
        return any(needle in arg for cmd in self.commands for arg in cmd)


def script_names() -> dict[str, str]:
    """SHA1 -> script name for every llmpool/lua/*.lua file (as sent: includes resolved)."""
    names = [e.name.removesuffix(".lua") for e in files("llmpool").joinpath("lua").iterdir() if e.name.endswith(".lua")]
    return {hashlib.sha1(lua_source(name).encode()).hexdigest(): name for name in names}


class _Parser:
    """Incremental RESP parser for client requests (arrays of bulk strings)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[list[bytes]]:
        self.buf += data
        out = []
        while True:
            parsed = self._one()
            if parsed is None:
                return out
            out.append(parsed)

    def _one(self) -> list[bytes] | None:
        buf = self.buf
        if not buf.startswith(b"*"):  # an inline command (never sent by redis-py): take the line
            end = buf.find(b"\r\n")
            if end < 0:
                return None
            self.buf = buf[end + 2:]
            return buf[:end].split()
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        count, pos, args = int(buf[1:end]), end + 2, []
        for _ in range(count):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            size = int(buf[pos + 1:end])
            start = end + 2
            if len(buf) < start + size + 2:
                return None
            args.append(buf[start:start + size])
            pos = start + size + 2
        self.buf = buf[pos:]
        return args


class TripCounter:
    """The proxy: `url` for the clients, forwarding to `upstream_port`; `trips` once `counting`."""

    def __init__(self, upstream_port: int, *, name_prefix: str) -> None:
        self.upstream_port = upstream_port
        self.prefix = name_prefix.encode()
        self.port = free_port()
        self.trips: list[Trip] = []
        self.counting = False
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._next_conn = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> TripCounter:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def taken(self) -> list[Trip]:
        """The trips counted so far (a copy)."""
        with self._lock:
            return list(self.trips)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
                self._next_conn += 1
                conn = _Conn(self, self._next_conn)
            self._spawn(self._pump, client, upstream, conn.from_client)
            self._spawn(self._pump, upstream, client, conn.from_server)

    def _pump(self, src: socket.socket, dst: socket.socket, seen: object) -> None:
        try:
            while data := src.recv(65536):
                seen(data)  # type: ignore[operator]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Conn:
    """One client connection's state: is it counted, and is the client's next write a new trip."""

    def __init__(self, proxy: TripCounter, number: int) -> None:
        self.proxy = proxy
        self.number = number
        self.parser = _Parser()
        self.named: bool | None = None  # None until the first command says who the client is
        self.answered = True  # the last bytes went server -> client: the next client bytes start a trip
        self.trip: Trip | None = None

    def from_client(self, data: bytes) -> None:
        commands = self.parser.feed(data)
        for cmd in commands:
            if self.named is not None or not cmd:
                continue
            verb = [arg.upper() for arg in cmd[:2]]
            if verb[:2] == [b"CLIENT", b"SETNAME"]:
                self.named = len(cmd) >= 3 and cmd[2].startswith(self.proxy.prefix)
            elif verb[0] not in HANDSHAKE:  # the first real command, and no name before it
                self.named = False
        if not (self.named and self.proxy.counting):
            self.answered = False
            return
        with self.proxy._lock:
            if self.answered or self.trip is None:
                self.trip = Trip(conn=self.number, at=time.time())
                self.proxy.trips.append(self.trip)
            self.trip.commands += commands
        self.answered = False

    def from_server(self, data: bytes) -> None:
        self.answered = True
