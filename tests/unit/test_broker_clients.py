"""workers.broker_clients: one plain client per kombu channel and connection pool."""

from __future__ import annotations

from typing import Any

from workers import broker_clients
from workers.channel_patch import patches


class FakeChannel:
    def __init__(self) -> None:
        self.pool: object = object()
        self.made: list[tuple[object, bool]] = []

    def create(self, asynchronous: bool = False) -> Any:
        client = object()
        self.made.append((client, asynchronous))
        return client


def test_one_client_per_pool_and_the_polling_client_untouched() -> None:
    channel = FakeChannel()
    create = broker_clients.reusing_client(FakeChannel.create)
    first = create(channel)
    assert create(channel) is first and len(channel.made) == 1
    polling = create(channel, asynchronous=True)
    assert polling is not first and channel.made[-1] == (polling, True)
    channel.pool = object()  # a reconnect makes a new pool: its commands go through a new client
    assert create(channel) is not first and len(channel.made) == 3


def test_install_wraps_kombus_channel_once() -> None:
    from kombu.transport import redis as kombu_redis

    broker_clients.install()
    wrapped = kombu_redis.Channel._create_client
    broker_clients.install()
    assert kombu_redis.Channel._create_client is wrapped and patches(wrapped).count("reusing_client") == 1
