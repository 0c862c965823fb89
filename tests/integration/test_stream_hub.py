"""The API's stream hub on a real Redis: one reader for every waiting client, nothing missed.

Each test runs its own event loop (asyncio.run) around one hub and the Redis the session started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.stream_hub import BATCH, MAX_BUFFERED, StreamHub, Waiter, WaitTimeout
from llmpool.errors import Overloaded
from llmpool.keys import Keys

KEYS = Keys("hubtest")
LONG_BLOCK_MS = 10_000  # a hub that had to wait out its XREAD would make these tests time out


def run(redis_url: str, scenario: Callable[[StreamHub, aioredis.Redis], Awaitable[None]], *,
        max_waiters: int = 100) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url, socket_timeout=30)
        hub = StreamHub(client, KEYS, max_waiters=max_waiters, block_ms=LONG_BLOCK_MS)
        hub.start()
        try:
            await scenario(hub, client)
        finally:
            await hub.close()
            await client.aclose()

    asyncio.run(main())


async def token(client: aioredis.Redis, key: str, text: str) -> None:
    await client.xadd(key, {"type": "token", "text": text})


async def end(client: aioredis.Redis, key: str) -> None:
    await client.xadd(key, {"type": "end", "state": "succeeded", "data": '{"content": "done"}'})


async def texts(waiter: Waiter) -> list[Any]:
    return [e.get("text", e["type"]) async for e in waiter.events()]


def follow(hub: StreamHub, key: str, *, within: float = 5.0) -> Waiter:
    waiter = hub.waiter()
    waiter.follow(key, until=time.time() + within)
    return waiter


def test_a_late_joiner_gets_the_whole_stream_from_its_start(redis_url: str) -> None:
    async def scenario(hub: StreamHub, client: aioredis.Redis) -> None:
        await token(client, "s1", "a")
        await token(client, "s1", "b")
        await end(client, "s1")
        assert await texts(follow(hub, "s1")) == ["a", "b", "end"]

    run(redis_url, scenario)


def test_a_new_waiter_is_read_at_once_not_after_the_xread_in_flight(redis_url: str) -> None:
    async def scenario(hub: StreamHub, client: aioredis.Redis) -> None:
        idle = follow(hub, "quiet", within=30)  # the hub now blocks on it for LONG_BLOCK_MS
        await asyncio.sleep(0.3)
        late = follow(hub, "busy", within=3.0)  # WaitTimeout unless the hub was woken
        await token(client, "busy", "x")
        await end(client, "busy")
        assert await texts(late) == ["x", "end"]
        idle.close()

    run(redis_url, scenario)


def test_waiters_of_one_stream_each_get_every_event(redis_url: str) -> None:
    async def scenario(hub: StreamHub, client: aioredis.Redis) -> None:
        first = follow(hub, "shared")
        await token(client, "shared", "a")
        assert (await first.next())["text"] == "a"
        second = follow(hub, "shared")  # joins after "a" was read by the first
        await token(client, "shared", "b")
        await end(client, "shared")
        assert await texts(first) == ["b", "end"]
        assert await texts(second) == ["a", "b", "end"]

    run(redis_url, scenario)


def test_a_client_that_does_not_read_is_not_read_for_and_holds_up_nobody(redis_url: str) -> None:
    async def scenario(hub: StreamHub, client: aioredis.Redis) -> None:
        slow = follow(hub, "long", within=20)
        pipe = client.pipeline(transaction=False)
        for i in range(3 * MAX_BUFFERED):
            pipe.xadd("long", {"type": "token", "text": str(i)})
        await pipe.execute()
        await end(client, "long")
        other = follow(hub, "short")
        await end(client, "short")
        assert await texts(other) == ["end"]  # the full buffer next door delays nothing
        assert slow.buffered < MAX_BUFFERED + BATCH  # memory stays bounded while it does not read
        assert await texts(slow) == [*map(str, range(3 * MAX_BUFFERED)), "end"]  # and it misses nothing

    run(redis_url, scenario)


def test_the_wait_ends_at_its_limit(redis_url: str) -> None:
    async def scenario(hub: StreamHub, client: aioredis.Redis) -> None:
        waiter = follow(hub, "never", within=0.3)
        with pytest.raises(WaitTimeout):
            await waiter.next()

    run(redis_url, scenario)


def test_closing_frees_the_place_at_once_and_the_limit_holds(redis_url: str) -> None:
    async def scenario(hub: StreamHub, client: aioredis.Redis) -> None:
        waiters = [follow(hub, f"job{i}") for i in range(3)]
        with pytest.raises(Overloaded, match="AGENT_API_MAX_WAITERS"):
            hub.waiter()
        assert hub.stats() == {"waiters": 3, "max_waiters": 3, "streams": 3}
        waiters[0].close()
        waiters[0].close()  # twice is harmless
        assert hub.stats() == {"waiters": 2, "max_waiters": 3, "streams": 2}
        follow(hub, "job9")  # the freed place is taken again
        for waiter in waiters:
            waiter.close()
        assert hub.stats()["waiters"] == 1

    run(redis_url, scenario, max_waiters=3)


def test_the_wake_stream_is_capped_and_expires(redis_url: str) -> None:
    async def scenario(hub: StreamHub, client: aioredis.Redis) -> None:
        keep = follow(hub, "idle", within=30)
        for i in range(5):
            await asyncio.sleep(0.1)
            follow(hub, f"more{i}").close()
        wake_keys = [key async for key in client.scan_iter(match=KEYS.api_wake("*"))]
        assert len(wake_keys) == 1
        assert await client.xlen(wake_keys[0]) == 1 and 0 < await client.ttl(wake_keys[0]) <= 60
        keep.close()

    run(redis_url, scenario)
