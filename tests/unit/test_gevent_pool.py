"""AGENT_WORKER_POOL=gevent: what it allows, how the worker's pools are sized, and the broker's ack pool."""

from __future__ import annotations

import resource
import threading
from typing import Any

import pytest
import redis

from llmpool.errors import ConfigError
from llmpool.hedge_pool import hedge_threads
from llmpool.redis_conn import sync_client
from llmpool.resources import chat_connections, redis_connections
from llmpool.settings import MAX_THREADS, load_settings
from workers import green_broker
from workers.greenlets import SPARE_FILES, call_later, room_for_sockets, running_green


@pytest.mark.parametrize("pool", ["threads", "prefork", "solo"])
def test_more_than_a_thousand_slots_need_gevent(pool: str) -> None:
    with pytest.raises(ConfigError, match="AGENT_WORKER_CONCURRENCY=5000 needs gevent"):
        load_settings(agent_worker_pool=pool, agent_worker_concurrency=5000)
    assert load_settings(agent_worker_pool=pool, agent_worker_concurrency=MAX_THREADS).agent_worker_concurrency == 1000


def test_gevent_takes_ten_thousand_slots_but_not_unbounded() -> None:
    assert load_settings(agent_worker_pool="gevent", agent_worker_concurrency=10_000).agent_worker_concurrency == 10_000
    with pytest.raises(ConfigError, match="AGENT_WORKER_CONCURRENCY"):
        load_settings(agent_worker_pool="gevent", agent_worker_concurrency=50_000)
    with pytest.raises(ConfigError, match="AGENT_WORKER_POOL"):
        load_settings(agent_worker_pool="eventlet")


@pytest.mark.parametrize(("pool", "concurrency", "cap", "http", "redis_pool"), [
    ("threads", 64, 0, 64, 72),  # one Redis connection per thread: that pool never runs short
    ("threads", 1000, 0, 1000, 1008),
    ("gevent", 100, 0, 100, 108),  # fewer greenlets than the cap: one each
    ("gevent", 10_000, 0, 10_000, 264),  # one HTTP connection per call, Redis capped
    ("gevent", 10_000, 50, 10_000, 50),  # AGENT_REDIS_MAX_CONNECTIONS
])
def test_connection_pools_are_sized_for_the_pool(pool: str, concurrency: int, cap: int, http: int,
                                                 redis_pool: int) -> None:
    settings = load_settings(agent_worker_pool=pool, agent_worker_concurrency=concurrency,
                             agent_redis_max_connections=cap, agent_hedge_enabled=False)
    assert (chat_connections(settings), redis_connections(settings)) == (http, redis_pool)


def test_hedge_calls_get_connections_of_their_own() -> None:
    settings = load_settings(agent_worker_pool="gevent", agent_worker_concurrency=100, agent_hedge_enabled=True)
    hedges = hedge_threads(100)
    assert hedges > 0
    assert (chat_connections(settings), redis_connections(settings)) == (100 + hedges, 108 + hedges)


def test_a_pool_wait_gives_a_blocking_pool_and_none_the_plain_one() -> None:
    blocking = sync_client("redis://127.0.0.1:1/0", master_name="m", pool_wait=0.2, max_connections=3).connection_pool
    assert isinstance(blocking, redis.BlockingConnectionPool)
    assert (blocking.max_connections, blocking.timeout) == (3, 0.2)
    plain = sync_client("redis://127.0.0.1:1/0", master_name="m", max_connections=3).connection_pool
    assert not isinstance(plain, redis.BlockingConnectionPool)
    assert plain.max_connections == 3


class _Channel:
    keyprefix_fanout = "/{db}."

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": 1, "db": 3, "max_connections": 10}


def test_the_broker_ack_pool_blocks_and_the_brpop_pool_is_untouched() -> None:
    original_calls: list[bool] = []

    def original(self: Any, asynchronous: bool = False) -> str:
        original_calls.append(asynchronous)
        return "kombu's own pool"

    get_pool = green_broker.blocking_pool(original)
    channel = _Channel()
    pool = get_pool(channel)
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout, channel.keyprefix_fanout) == (10, green_broker.ACK_POOL_WAIT, "/3.")
    assert get_pool(channel, asynchronous=True) == "kombu's own pool"
    assert original_calls == [True]


def test_without_gevent_running_nothing_is_patched() -> None:
    from kombu.transport import redis as kombu_redis

    assert not running_green()  # the test process never monkey-patches
    before = kombu_redis.Channel._get_pool
    green_broker.install()
    assert kombu_redis.Channel._get_pool is before


def test_call_later_runs_the_action_off_the_caller() -> None:
    done = threading.Event()
    ran_on: list[str] = []

    def action() -> None:
        ran_on.append(threading.current_thread().name)
        done.set()

    call_later(0.01, action)
    assert done.wait(5)
    assert ran_on != [threading.current_thread().name]


def test_room_for_sockets_raises_the_soft_open_files_limit_up_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert room_for_sockets(100) == 100 + SPARE_FILES <= hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (100 + SPARE_FILES, hard)
        assert room_for_sockets(10) == 100 + SPARE_FILES  # never lowered
        if hard != resource.RLIM_INFINITY:
            assert room_for_sockets(hard * 2) == hard  # capped at the hard limit (and a warning)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_llmpool_up_starts_the_chat_worker_with_the_pool_and_slots_of_the_settings(tmp_path) -> None:  # noqa: ANN001
    from llmpool.dev.stack import _service_commands

    settings = load_settings(agent_worker_pool="gevent", agent_worker_concurrency=10_000)
    commands = dict(_service_commands(settings, data_dir=tmp_path))
    worker, control = commands["worker"], commands["control"]
    assert worker[worker.index("-P") + 1:worker.index("-P") + 4] == ["gevent", "-c", "10000"]
    assert control[control.index("-P") + 1] == "threads"  # the control plane keeps its own threads
