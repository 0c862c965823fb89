"""The wall-clock deadline on a whole HTTP call, against raw-socket servers in threads.

A server that sends one byte every 0.1 s never trips a 2 s read timeout; only the deadline ends
the call. These tests also fail if an httpx upgrade stops honouring the swapped connection pool.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from llmpool.http_deadline import CallCancel, call_deadline, make_bounded_client
from tests.unit.raw_server import Behaviour

DRIP = 0.1  # seconds between the bytes a trickling server sends
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _drip(conn: socket.socket, stop: threading.Event, data: bytes) -> None:
    for i in range(len(data)):
        if stop.wait(DRIP):
            return
        conn.sendall(data[i:i + 1])


def trickle_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(HEAD)
    _drip(conn, stop, b"ffff\r\n" + b"x" * 0xFFFF)


def trickle_headers(conn: socket.socket, stop: threading.Event) -> None:
    _drip(conn, stop, b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"y" * 1000 + b"\r\n\r\n")


def silent(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(10)


def answers(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")






@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with make_bounded_client(max_connections=4, timeout=2.0) as bounded:
        yield bounded


def _read_all(client: httpx.Client, url: str) -> bytes:
    with client.stream("GET", url) as response:
        return b"".join(response.iter_raw())


@pytest.mark.parametrize("behaviour", [trickle_body, trickle_headers], ids=["body", "headers"])
def test_a_trickle_ends_at_the_deadline_not_at_the_read_timeout(serve, client: httpx.Client,  # noqa: ANN001
                                                                behaviour: Behaviour) -> None:
    server = serve(behaviour)
    started = time.monotonic()
    with call_deadline(0.4) as deadline, pytest.raises(httpx.ReadTimeout):
        _read_all(client, server.url)
    elapsed = time.monotonic() - started
    assert deadline.expired
    assert 0.35 <= elapsed < 0.4 + DRIP  # cut by the deadline itself, not at the next byte


def test_the_per_read_timeout_still_fires_first_when_it_is_shorter(serve, client: httpx.Client) -> None:  # noqa: ANN001
    server = serve(silent)
    with call_deadline(10) as deadline, pytest.raises(httpx.ReadTimeout):
        client.get(server.url, timeout=0.3)
    assert not deadline.expired  # the server's silence, not the call's total


def test_a_passed_deadline_sends_nothing(serve, client: httpx.Client) -> None:  # noqa: ANN001
    server = serve(answers)
    with call_deadline(0) as deadline, pytest.raises(httpx.TimeoutException):
        client.get(server.url)
    assert deadline.expired


def test_calls_without_a_deadline_and_after_a_cut_one_work(serve, client: httpx.Client) -> None:  # noqa: ANN001
    good, slow = serve(answers), serve(trickle_body)
    assert client.get(good.url).text == "ok"
    with call_deadline(0.3), pytest.raises(httpx.ReadTimeout):
        _read_all(client, slow.url)
    with call_deadline(5) as deadline:
        assert client.get(good.url).text == "ok"
    assert not deadline.expired


def test_the_deadline_is_per_thread(serve, client: httpx.Client) -> None:  # noqa: ANN001
    """A thread without a deadline is not cut by another thread's."""
    slow = serve(trickle_body)
    read: list[int] = []

    def undeadlined() -> None:
        with client.stream("GET", slow.url, timeout=2.0) as response:
            for chunk in response.iter_raw():
                read.append(len(chunk))
                if sum(read) >= 2:  # 8 bytes of drip (0.8 s) in: past the other thread's deadline
                    return

    other = threading.Thread(target=undeadlined)
    other.start()
    with call_deadline(0.3), pytest.raises(httpx.ReadTimeout):
        _read_all(client, slow.url)
    other.join(10)
    assert sum(read) >= 2


def _cancel_after(cancel: CallCancel, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), cancel.cancel()))
    thread.start()
    return thread


@pytest.mark.parametrize("behaviour", [silent, trickle_body], ids=["silent", "mid-body"])
def test_a_cancel_from_another_thread_ends_a_blocked_call_and_closes_its_connection(
    serve, client: httpx.Client, behaviour: Behaviour  # noqa: ANN001
) -> None:
    """A hedged call's loser: its read is woken at once (not at its 2 s read timeout), its socket shut."""
    server = serve(behaviour)
    cancel = CallCancel()
    canceller = _cancel_after(cancel, 0.2)
    with call_deadline(10, cancel=cancel) as deadline, pytest.raises(httpx.HTTPError) as cut:
        _read_all(client, server.url)
    canceller.join(5)
    assert not isinstance(cut.value, httpx.TimeoutException) and not deadline.expired
    assert cancel.cancelled


def test_a_cancelled_call_sends_nothing_more_and_the_pool_still_works(serve, client: httpx.Client) -> None:  # noqa: ANN001
    good = serve(answers)
    cancel = CallCancel()
    cancel.cancel()
    with call_deadline(10, cancel=cancel), pytest.raises(httpx.HTTPError):
        client.get(good.url)
    assert client.get(good.url).text == "ok"  # the next call, on the same pool, is not touched


def test_an_http_proxy_from_the_environment_is_used_and_bounded(serve, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """HTTP_PROXY is honoured as httpx honours it, and a call through the proxy still ends at its deadline."""
    proxy = serve(answers)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with make_bounded_client(max_connections=2, timeout=2.0) as through_proxy:
        # llm.invalid resolves nowhere: an answer can only have come from the proxy.
        assert through_proxy.get("http://llm.invalid/v1/models").text == "ok"
    trickling = serve(trickle_body)
    monkeypatch.setenv("HTTP_PROXY", trickling.url)
    with make_bounded_client(max_connections=2, timeout=2.0) as through_proxy:
        started = time.monotonic()
        with call_deadline(0.4) as deadline, pytest.raises(httpx.ReadTimeout):
            through_proxy.get("http://llm.invalid/v1/models")
        assert deadline.expired and time.monotonic() - started < 2.0  # not the 2 s per-read timeout


def test_no_proxy_reaches_the_server_directly(serve, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    server = serve(answers)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the discard port: nothing answers there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with make_bounded_client(max_connections=2, timeout=2.0) as direct:
        assert direct.get(server.url).text == "ok"
