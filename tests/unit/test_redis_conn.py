"""REDIS_URL in kombu's sentinel form: parsed as kombu and Celery read it, bad ones named at start,
passwords never shown, and the Celery options that follow from it. Real Sentinels:
tests/integration/test_redis_sentinel.py and tests/chaos/test_sentinel_failover.py."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from llmpool.errors import ConfigError
from llmpool.redis_conn import (
    AsyncSentinelMasterRedis,
    SentinelMasterRedis,
    SentinelURL,
    async_client,
    celery_transport_options,
    parse_sentinel_url,
    redacted_url,
    sync_client,
)
from llmpool.settings import load_settings

PARSED = [
    ("sentinel://h1:26379", SentinelURL(sentinels=(("h1", 26379),))),
    ("sentinel://h1", SentinelURL(sentinels=(("h1", 26379),))),
    ("sentinel://h1:26379;sentinel://h2:26380;sentinel://10.0.0.3",
     SentinelURL(sentinels=(("h1", 26379), ("h2", 26380), ("10.0.0.3", 26379)))),
    ("sentinel://:s3cret@h1:26379/2;sentinel://h2:26379",
     SentinelURL(sentinels=(("h1", 26379), ("h2", 26379)), db=2, password="s3cret")),
    ("sentinel://app:p%40ss@h1/1;sentinel://app:p%40ss@h2/1",
     SentinelURL(sentinels=(("h1", 26379), ("h2", 26379)), db=1, username="app", password="p@ss")),
    ("sentinel://h1:26379;", SentinelURL(sentinels=(("h1", 26379),))),  # a trailing ; is no sentinel
]


@pytest.mark.parametrize(("url", "expected"), PARSED)
def test_sentinel_urls_parse_as_kombu_reads_them(url: str, expected: SentinelURL) -> None:
    assert parse_sentinel_url(url) == expected


BAD = [
    ("sentinel://h1:26379;redis://h2:6379", "must start with sentinel://"),
    ("sentinel://h1:notaport", "bad port"),
    ("sentinel://h1:99999", "bad port"),
    ("sentinel://:26379", "no host"),
    ("sentinel://h1:26379/db0", "db number"),
    ("sentinel://h1/1;sentinel://h2/2", "first sentinel:// part"),
    ("sentinel://:a@h1;sentinel://:b@h2", "first sentinel:// part"),
]


@pytest.mark.parametrize(("url", "message"), BAD)
def test_a_bad_sentinel_url_stops_start_up_naming_redis_url(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(redis_url=url)
    assert "REDIS_URL" in str(caught.value) and message in str(caught.value)


def test_the_error_for_a_bad_url_does_not_show_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(redis_url="sentinel://:hunter2@h1:26379;redis://:hunter2@h2")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://user:pw@h:6379/0", "redis://user:***@h:6379/0"),
    ("sentinel://:pw@h1:26379/0;sentinel://:pw@h2:26379/0", "sentinel://:***@h1:26379/0;sentinel://:***@h2:26379/0"),
    ("sentinel://h1:26379;sentinel://h2:26379", "sentinel://h1:26379;sentinel://h2:26379"),
])
def test_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_celery_gets_the_master_name_only_with_sentinels() -> None:
    plain = load_settings(redis_url="redis://localhost:6379/0", agent_redis_master_name="other")
    ha = load_settings(redis_url="sentinel://h1:26379;sentinel://h2:26379", agent_redis_master_name="other")
    assert celery_transport_options(plain) == {}
    assert celery_transport_options(ha) == {"master_name": "other"}


def test_a_plain_url_makes_a_plain_client_with_the_options_given() -> None:
    client = sync_client("redis://h:6380/3", master_name="unused", socket_timeout=7, max_connections=9)
    kwargs = client.connection_pool.connection_kwargs
    assert (type(client), kwargs["host"], kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == (
        redis.Redis, "h", 6380, 3, 7)
    assert client.connection_pool.max_connections == 9
    client.close()


def test_a_sentinel_url_makes_a_client_of_the_named_master_that_keeps_the_options() -> None:
    """Nothing connects until a command runs; the pool asks the Sentinels for `mymaster` then."""
    client = sync_client("sentinel://:pw@h1:26379/2;sentinel://h2:26380", master_name="mymaster",
                         socket_timeout=10, socket_connect_timeout=5, max_connections=12, health_check_interval=30)
    assert isinstance(client, SentinelMasterRedis)
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    assert (pool.service_name, pool.is_master, pool.max_connections) == ("mymaster", True, 12)
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"], kwargs["health_check_interval"]) == (
        2, "pw", 10, 30)
    manager = client.sentinel_manager
    assert manager is not None
    nodes = [(n.connection_pool.connection_kwargs["host"], n.connection_pool.connection_kwargs["port"])
             for n in manager.sentinels]
    assert nodes == [("h1", 26379), ("h2", 26380)]
    # Sentinels are asked with short timeouts and no password, as kombu and Celery ask them, and a
    # dead one is not retried: the next Sentinel is asked at once.
    sentinel_kwargs = manager.sentinels[0].connection_pool.connection_kwargs
    assert sentinel_kwargs["socket_timeout"] <= 2 and sentinel_kwargs.get("password") is None
    assert sentinel_kwargs["retry"].get_retries() == 0
    client.close()
    assert client.sentinel_manager is None


async def _async_client_shape() -> tuple[type, str, int]:
    client = async_client("sentinel://h1:26379/4", master_name="mymaster", socket_timeout=30)
    pool = client.connection_pool
    shape = (type(client), pool.service_name, pool.connection_kwargs["db"])  # type: ignore[attr-defined]
    await client.aclose()
    return shape


def test_the_asyncio_client_follows_the_same_url() -> None:
    import asyncio

    assert asyncio.run(_async_client_shape()) == (AsyncSentinelMasterRedis, "mymaster", 4)
    plain = async_client("redis://h:6379/1", master_name="unused")
    assert type(plain) is aioredis.Redis


def test_an_empty_master_name_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="AGENT_REDIS_MASTER_NAME"):
        load_settings(redis_url="sentinel://h1:26379", agent_redis_master_name="")
