"""The Redis-logic unit tests again, on a real Redis.

Each module here imports one tests/unit module's tests, which run there on fakeredis with a
frozen clock. Here only the Redis and the clock differ: a real redis-server and wall time, so
what fakeredis emulates (Lua, TIME, expiry) is checked against the real thing.
"""

from __future__ import annotations

import pytest
import redis

from tests.conftest import RealClock


@pytest.fixture
def any_redis(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


@pytest.fixture
def clock(real_clock: RealClock) -> RealClock:
    return real_clock
