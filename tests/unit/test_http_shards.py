"""The chat client's pool split into shards past SHARD_SIZE connections: sizes, balance, release, deadline."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import httpx
import pytest

from llmpool.dev.redis_server import free_port
from llmpool.http_deadline import call_deadline, make_bounded_client
from llmpool.http_shards import SHARD_SIZE, ShardedTransport, shard_sizes
from tests.processes import wait_for
from tests.unit.raw_server import RawServer


@pytest.mark.parametrize(("connections", "sizes"), [
    (1, [1]), (SHARD_SIZE, [SHARD_SIZE]), (SHARD_SIZE + 1, [33, 32]), (130, [44, 43, 43]),
])
def test_shard_sizes_add_up_and_stay_small(connections: int, sizes: list[int]) -> None:
    assert shard_sizes(connections) == sizes


def test_ten_thousand_connections_are_157_pools_of_at_most_64() -> None:
    sizes = shard_sizes(10_000)
    assert (len(sizes), sum(sizes), max(sizes), min(sizes)) == (157, 10_000, 64, 63)


def _held_until(release: threading.Event) -> Callable[[socket.socket, threading.Event], None]:
    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        release.wait(10)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return behaviour


def test_calls_spread_evenly_over_the_shards_and_release_them(serve: Callable[..., RawServer]) -> None:
    release = threading.Event()
    server = serve(_held_until(release))
    client = make_bounded_client(max_connections=130, timeout=5)
    transport = client._transport
    assert isinstance(transport, ShardedTransport)
    answers: list[bytes] = []
    callers = [threading.Thread(target=lambda: answers.append(client.get(server.url).content)) for _ in range(130)]
    try:
        for caller in callers:
            caller.start()
        wait_for(lambda: sum(transport.in_flight()) == 130, timeout=10, what="130 calls in flight")
        assert sorted(transport.in_flight()) == [43, 43, 44]  # every connection of every shard in use
        release.set()
        for caller in callers:
            caller.join(10)
        assert answers == [b"ok"] * 130
        assert transport.in_flight() == [0, 0, 0]
    finally:
        release.set()
        client.close()


def test_a_failed_connect_gives_its_shard_slot_back() -> None:
    client = make_bounded_client(max_connections=SHARD_SIZE * 2, timeout=2)
    transport = client._transport
    assert isinstance(transport, ShardedTransport)
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{free_port()}/")  # nothing listens there
    assert transport.in_flight() == [0, 0]
    client.close()


def test_the_call_deadline_holds_through_a_shard(serve: Callable[..., RawServer]) -> None:
    server = serve(lambda conn, stop: stop.wait(10))  # never answers
    with make_bounded_client(max_connections=SHARD_SIZE * 2, timeout=5) as client:
        with pytest.raises(httpx.TimeoutException), call_deadline(0.3) as deadline:
            client.get(server.url)
        assert deadline.expired  # the 0.3 s deadline ended it, not the 5 s read timeout
        assert client._transport.in_flight() == [0, 0]  # type: ignore[attr-defined]
