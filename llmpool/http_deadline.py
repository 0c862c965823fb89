"""A wall-clock deadline on a whole HTTP call, enforced on every socket operation.

httpx's timeouts are per operation: a read timeout bounds one `recv`, so a server that sends a
byte every 0.3 s, or SSE keep-alives forever, never trips it. httpcore 1.0 reads the read timeout
once per response body (`_receive_response_body`), so changing `request.extensions["timeout"]`
mid-stream does nothing. Instead the clients built here give httpcore a network backend whose
streams cap every connect, read and write at what is left of the calling thread's deadline (set
with `call_deadline`). A call therefore ends at its deadline in whatever phase it is (connecting,
waiting for headers, reading the body), with no watchdog thread and no socket shut down under
another thread's feet; the overshoot is the socket's timer slack, a few milliseconds.

The deadline lives in a contextvar: a sync httpx call runs entirely in its caller's thread, and a
connection reused by another thread later reads that thread's deadline, not this one's.

A call can also be cancelled from another thread (`CallCancel`: a hedged call whose twin answered
first). Cancelling shuts down the socket the call is reading from at that moment, which wakes the
blocked `recv` at once; the socket is only touched while this call's own read is in progress, so a
pooled connection another call reuses later is never shut down by mistake.
"""

from __future__ import annotations

import contextvars
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import httpcore
import httpx
from httpx._utils import get_environment_proxies  # what httpx.Client reads; not exported

from llmpool.http_shards import ShardedTransport, shard_sizes

__all__ = ["CallCancel", "CallDeadline", "call_deadline", "make_bounded_client"]


class CallCancel:
    """Lets another thread end one call now: its read in progress is woken, any later operation fails."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._reading: httpcore.NetworkStream | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """End the call: shut down the socket it is reading from, if it is reading right now."""
        with self._lock:
            self._cancelled.set()
            if self._reading is not None:
                _shut_down(self._reading)

    def wait(self, timeout: float) -> bool:
        """Block until cancelled (True) or `timeout` passes (False)."""
        return self._cancelled.wait(timeout)

    def enter(self, stream: httpcore.NetworkStream, failure: type[Exception]) -> None:
        """A socket operation starts on `stream`: `failure` if the call was cancelled already."""
        with self._lock:
            if self._cancelled.is_set():
                raise failure("the call was cancelled")
            self._reading = stream

    def leave(self) -> None:
        with self._lock:
            self._reading = None


def _shut_down(stream: httpcore.NetworkStream) -> None:
    sock = stream.get_extra_info("socket")
    if sock is None:
        return
    try:
        # socket.socket's own shutdown, not SSLSocket's (which drops its SSL object under the reader).
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the read has ended anyway


class CallDeadline:
    """When the current call must end (monotonic seconds), and whether a socket operation hit it."""

    def __init__(self, at: float, cancel: CallCancel | None = None) -> None:
        self.at = at
        self.expired = False
        self.cancel = cancel

    def left(self) -> float:
        return self.at - time.monotonic()


_current: contextvars.ContextVar[CallDeadline | None] = contextvars.ContextVar("llmpool_call_deadline",
                                                                                default=None)


@contextmanager
def call_deadline(seconds: float, *, cancel: CallCancel | None = None) -> Iterator[CallDeadline]:
    """Every socket operation of httpx calls made inside ends within `seconds` from now (or at `cancel`)."""
    deadline = CallDeadline(time.monotonic() + seconds, cancel)
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)


def _capped(timeout: float | None, expired: type[Exception]) -> tuple[float | None, CallDeadline | None]:
    """`timeout` cut to the deadline's remainder; the deadline when it is what bounds the operation."""
    deadline = _current.get()
    if deadline is None:
        return timeout, None
    left = deadline.left()
    if left <= 0:
        deadline.expired = True
        raise expired("the call's total deadline passed")
    if timeout is None or left < timeout:
        return left, deadline
    return timeout, None


def _cancel_of_current() -> CallCancel | None:
    deadline = _current.get()
    return deadline.cancel if deadline is not None else None


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the calling thread's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    @contextmanager
    def _operation(self, timeout: float | None, expired: type[Exception],
                   broken: type[Exception]) -> Iterator[float | None]:
        """One socket operation: its timeout cut to the deadline, cancellable while it runs (a
        cancel makes it raise `broken`), and the deadline marked expired if it is what ended it."""
        limit, deadline = _capped(timeout, expired)
        cancel = _cancel_of_current()
        if cancel is not None:
            cancel.enter(self, broken)
        try:
            yield limit
        except expired:
            if deadline is not None:
                deadline.expired = True
            raise
        finally:
            if cancel is not None:
                cancel.leave()

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with self._operation(timeout, httpcore.ReadTimeout, httpcore.ReadError) as limit:
            return self._inner.read(max_bytes, limit)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with self._operation(timeout, httpcore.WriteTimeout, httpcore.WriteError) as limit:
            self._inner.write(buffer, limit)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        limit, _ = _capped(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, limit))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend with every stream (and every connect) bounded by the deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        limit, _ = _capped(timeout, httpcore.ConnectTimeout)
        cancel = _cancel_of_current()
        if cancel is not None and cancel.cancelled:
            raise httpcore.ConnectError("the call was cancelled")
        return _DeadlineStream(self._inner.connect_tcp(host, port, limit, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        limit, _ = _capped(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, limit, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport over a connection pool (direct, or through an HTTP proxy) that uses
    the deadline backend.

    httpx takes no network backend, so the pool it built is swapped for an identical one that has
    ours (tests/unit/test_http_deadline.py fails if an httpx upgrade stops honouring it). A SOCKS
    proxy keeps httpx's own pool: its calls have httpx's per-operation timeouts only.
    """

    def __init__(self, limits: httpx.Limits, proxy: httpx.Proxy | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """`ssl_context`: one to share (shards share one: each new context costs ~0.9 MB of CA certificates)."""
        ssl_context = ssl_context or httpx.create_ssl_context()
        super().__init__(limits=limits, proxy=proxy, verify=ssl_context)
        common: dict[str, typing.Any] = {
            "ssl_context": ssl_context, "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry, "network_backend": _DeadlineBackend()}
        if proxy is None:
            self._pool = httpcore.ConnectionPool(**common)
        elif proxy.url.scheme in ("http", "https"):
            url = httpcore.URL(scheme=proxy.url.raw_scheme, host=proxy.url.raw_host, port=proxy.url.port,
                               target=proxy.url.raw_path)
            self._pool = httpcore.HTTPProxy(proxy_url=url, proxy_auth=proxy.raw_auth, proxy_headers=proxy.headers.raw,
                                            proxy_ssl_context=proxy.ssl_context, **common)


def _proxy_mounts(limits: httpx.Limits) -> dict[str, httpx.BaseTransport | None]:
    """HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY, as httpx itself reads them, over our transport
    (an explicit transport turns httpx's own reading of them off)."""
    return {pattern: None if url is None else _DeadlineTransport(limits, proxy=httpx.Proxy(url))
            for pattern, url in get_environment_proxies().items()}


def make_bounded_client(*, max_connections: int, timeout: float) -> httpx.Client:
    """A pooled httpx client whose calls honour `call_deadline`; `timeout` is its default per operation.

    Past SHARD_SIZE connections the direct pool is split into shards (llmpool.http_shards: a pool's
    upkeep per call grows with its size); a proxy's pool stays one.
    """
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    sizes = shard_sizes(max_connections)
    shared = httpx.create_ssl_context()
    transport: httpx.BaseTransport = _DeadlineTransport(limits) if len(sizes) == 1 else ShardedTransport(
        [_DeadlineTransport(httpx.Limits(max_connections=n, max_keepalive_connections=n), ssl_context=shared)
         for n in sizes])
    return httpx.Client(transport=transport, mounts=_proxy_mounts(limits), timeout=timeout, follow_redirects=False)
