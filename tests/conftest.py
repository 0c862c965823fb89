"""Shared fixtures: a real Redis server for the session, flushed before each test that uses it.

A test that needs Redis and cannot start one skips locally and fails under CI (CI=true).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(params=["fakeredis", "redis"])
def any_redis(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The same test against fakeredis (Lua via lupa) and a real Redis: they must agree."""
    if request.param == "fakeredis":
        fake = fakeredis.FakeRedis()
        yield fake
        fake.close()
    else:
        yield request.getfixturevalue("redis_client")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory for processes: no stray `.env` is read from the repo."""
    return tmp_path
