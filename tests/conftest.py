"""Shared fixtures: a real Redis server for the session, flushed before each test that uses it,
and the Redis the Redis-logic tests run on with the clock that times it.

A test that needs Redis and cannot start one skips locally and fails under CI (CI=true).

The Redis-logic tests (tests/unit/test_admission.py, test_jobs.py, ...) take `any_redis` and
`clock`. In tests/unit they get fakeredis on a `FrozenClock`: Redis time moves only when the test
calls `clock.sleep`, so no assertion depends on how fast the machine is. The modules
tests/integration/real_redis/ import the very same tests and give them a real Redis and
a `RealClock`; there, a run whose `clock.within` window was missed because the machine was slow
proves nothing either way and is run again (see `pytest_pyfunc_call`).
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import fakeredis
import pytest
import redis

from llmpool.dev.redis_server import RedisServer, find_redis_server

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)


def require_redis_binary() -> None:
    """Skip when no redis-server can be found, except under CI, where that is a failure."""
    try:
        find_redis_server()
    except FileNotFoundError as exc:
        if IN_CI:
            pytest.fail(f"Redis is required under CI: {exc}")
        pytest.skip(f"no redis-server: {exc}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_redis_binary()
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# --- the Redis-logic tests' Redis and clock ---------------------------------------------------

class TooSlow(Exception):
    """Steps a test needs inside one time window took longer on a real clock: the run proves nothing."""


class FrozenClock:
    """Test time that moves only when the test sleeps; fakeredis reads it (TIME, key expiry)."""

    def __init__(self) -> None:
        # Real time to the second, so deadlines computed from time.time() still hold.
        self.now = float(int(time.time()))

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        """The steps inside must take less than `seconds` of Redis time: here, no time passes."""
        started = self.now
        yield
        assert self.now - started < seconds, "the test sleeps inside its own window"


class RealClock:
    """Wall time, which a real Redis reads too."""

    SLACK = 0.005  # Redis rounds TTLs to milliseconds: a window missed by less is still missed

    def __init__(self, restart: Callable[[], object] | None = None) -> None:
        self.restart = restart  # called before a run that was too slow is run again

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        """Raise TooSlow, whatever the steps inside did, when they took `seconds` or more.

        Redis timed each step between the moments the client sent it and read its reply, so the
        client's elapsed time bounds what Redis saw.
        """
        started = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - started
            if elapsed >= seconds - self.SLACK:
                raise TooSlow(f"steps that must take under {seconds}s took {elapsed:.3f}s")


Clock = FrozenClock | RealClock  # what a Redis-logic test's `clock` is


class _FrozenTime(ModuleType):
    """The `time` module as fakeredis sees it: the clock's time, everything else real."""

    def __init__(self, clock: FrozenClock) -> None:
        super().__init__("time")
        self._clock = clock

    def time(self) -> float:
        return self._clock.time()

    def time_ns(self) -> int:
        return int(self._clock.time() * 1e9)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    """Frozen time for fakeredis: every fakeredis module that reads `time` reads this clock."""
    frozen = FrozenClock()
    fake_time = _FrozenTime(frozen)
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "fakeredis" and getattr(module, "time", None) is time:
            monkeypatch.setattr(module, "time", fake_time)
    return frozen


@pytest.fixture
def any_redis(clock: FrozenClock) -> Iterator[redis.Redis]:
    """fakeredis (Lua via lupa) on the frozen clock; tests/integration/real_redis/ give a real one."""
    fake = fakeredis.FakeRedis()
    seconds, micros = fake.time()
    # A fakeredis that stopped reading `time` the way `clock` patches it would silently run on real time.
    assert seconds + micros / 1e6 == pytest.approx(clock.now, abs=1e-6), "fakeredis no longer reads the clock"
    yield fake
    fake.close()


@pytest.fixture
def real_clock(redis_client: redis.Redis) -> RealClock:
    """For tests/integration/real_redis/: `clock` on a real Redis, flushed before a rerun."""
    return RealClock(restart=redis_client.flushall)


RERUNS = 5  # a run too slow to judge is run again this many times at most


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a test on a RealClock again while it was too slow to judge (TooSlow); others as usual."""
    clock = pyfuncitem.funcargs.get("clock")
    if not isinstance(clock, RealClock):
        return None
    names = inspect.signature(pyfuncitem.obj).parameters
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    for _ in range(RERUNS):
        try:
            pyfuncitem.obj(**kwargs)
            return True
        except TooSlow as exc:
            slow = exc
            if clock.restart is not None:
                clock.restart()
    pytest.fail(f"too slow to judge in {RERUNS} runs: {slow}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory for processes: no stray `.env` is read from the repo."""
    return tmp_path
