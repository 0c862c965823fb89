"""A call's short, renewed concurrency lease on a real Redis: tests/unit/test_call_leases.py's tests.

The very same tests run on fakeredis with a frozen clock in tests/unit. Here only the Redis
and the clock differ (conftest `any_redis`, `clock`): a real redis-server and wall time, so
what fakeredis emulates (Lua, TIME, expiry) is checked against the real thing.
"""

from __future__ import annotations

import pytest
import redis

from tests.conftest import RealClock
from tests.unit.test_call_leases import *  # noqa: F403 - the very same tests, with their fixtures


@pytest.fixture
def any_redis(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


@pytest.fixture
def clock(real_clock: RealClock) -> RealClock:
    return real_clock
