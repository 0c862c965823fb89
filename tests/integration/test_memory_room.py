"""job_create.lua's memory check on a real Redis: INFO memory is read on every submit except for
a few ms after one that found Redis under half its maxmemory (the `memory_room` mark), never with
no maxmemory, and near the limit every submit reads and is refused past it (RedisFull)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from llmpool.errors import RedisFull
from llmpool.jobs import MEMORY_ROOM_MS, JobStore
from llmpool.keys import Keys
from llmpool.redis_memory import SUBMIT_LIMIT

KEYS = Keys("t")


@pytest.fixture
def store(redis_client: redis.Redis) -> Iterator[JobStore]:
    try:
        yield JobStore(redis_client, KEYS, ttl=100, stream_ttl=50)
    finally:
        redis_client.config_set("maxmemory", 0)  # the session's Redis is shared by later tests


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _create(store: JobStore, job_id: str) -> bool:
    return store.create(job_id, queue="chat.default", deadline=0, summary="", payload={}, memory_limit=SUBMIT_LIMIT)


def test_a_roomy_reading_is_trusted_only_briefly(store: JobStore, redis_client: redis.Redis) -> None:
    redis_client.config_set("maxmemory", 4 * _used(redis_client))
    assert _create(store, "j1")
    assert 0 < redis_client.pttl(KEYS.memory_room()) <= MEMORY_ROOM_MS
    redis_client.config_set("maxmemory", int(_used(redis_client) / ((SUBMIT_LIMIT + 1) / 2)))  # past the limit
    time.sleep(MEMORY_ROOM_MS / 1000 + 0.02)
    with pytest.raises(RedisFull):
        _create(store, "j2")
    assert not redis_client.exists(KEYS.job("j2"))
    assert not redis_client.exists(KEYS.memory_room())  # near the limit no reading is trusted


def test_without_maxmemory_every_submit_reads(store: JobStore, redis_client: redis.Redis) -> None:
    redis_client.config_set("maxmemory", 0)
    assert _create(store, "j1")
    assert not redis_client.exists(KEYS.memory_room())  # CONFIG SET may set a limit at any time
