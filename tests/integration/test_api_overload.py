"""A shortage of the API's own is `503 overloaded`, said as such, with nothing enqueued; Redis down
is still `503 redis_unavailable`.

The waiter limit runs on a real uvicorn with no worker, so that chats wait for as long as the test
wants; the pool shortage runs the app in-process (httpx's ASGI transport), so the test can hold
every pooled connection itself.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from api.app import create_app
from api.deps import ApiState
from llmpool.dev.redis_server import free_port
from llmpool.keys import Keys
from llmpool.settings import get_settings
from tests.processes import clean_env, start_api, wait_for

MAX_WAITERS = 2


def _job_count(client: redis.Redis) -> int:
    return sum(1 for _ in client.scan_iter(match=Keys().job("*")))


def _waiting_chat(url: str, message: str) -> socket.socket:
    """A raw client whose JSON chat waits (no worker runs it) until the socket is closed."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"message": message}).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /poll_requests HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
                 b"Accept: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return sock


def _waiters(url: str) -> int:
    return int(httpx.get(url + "/status", timeout=10).json()["api"]["waiters"])


def test_a_client_past_the_waiter_limit_gets_503_overloaded_and_nothing_is_enqueued(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    env = clean_env(redis_url=redis_url, agent_api_max_waiters=MAX_WAITERS,
                    agent_backend_url=f"http://127.0.0.1:{free_port()}")
    api, url = start_api(tmp_path, env)
    waiting: list[socket.socket] = []
    try:
        waiting = [_waiting_chat(url, f"waits {i}") for i in range(MAX_WAITERS)]
        # A chat counts as a waiter before its job is stored: the baseline needs both jobs stored.
        wait_for(lambda: _waiters(url) == MAX_WAITERS and _job_count(redis_client) == MAX_WAITERS, timeout=10,
                 what="two chats to wait, their jobs stored")
        jobs = _job_count(redis_client)
        refused = httpx.post(url + "/poll_requests", json={"message": "one too many"},
                             headers={"Accept": "application/json"}, timeout=10)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        error = refused.json()["error"]
        assert error["type"] == "overloaded" and "AGENT_API_MAX_WAITERS" in error["message"]
        assert "Redis" not in error["message"]
        assert _job_count(redis_client) == jobs  # refused before anything was stored
        for sock in waiting:
            sock.close()
        wait_for(lambda: _waiters(url) == 0, timeout=5, what="the hung-up chats to free their places")
        waiting = [_waiting_chat(url, "room again")]
        wait_for(lambda: _waiters(url) == 1, timeout=10, what="a chat to be taken again")
    finally:
        for sock in waiting:
            sock.close()
        api.stop()


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """Settings from the environment this test sets, not from a stray `.env`."""
    monkeypatch.chdir(tmp_path)
    for name, value in clean_env(agent_api_redis_connections=4).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


async def _in_process(scenario: Callable[[httpx.AsyncClient, ApiState], Awaitable[None]]) -> None:
    """The app with its lifespan, asked through httpx's ASGI transport."""
    app = create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            await scenario(client, app.state.llmpool)


def test_no_free_pooled_connection_is_503_overloaded_not_redis_down(app_env: pytest.MonkeyPatch,
                                                                    redis_url: str) -> None:
    app_env.setenv("REDIS_URL", redis_url)

    async def scenario(client: httpx.AsyncClient, state: ApiState) -> None:
        pool = state.redis.connection_pool
        held = [pool.get_connection() for _ in range(state.budget.threads)]
        try:
            started = time.monotonic()
            response = await client.get("/jobs/anything")
            assert time.monotonic() - started < 5  # refused, not queued behind the held connections
        finally:
            for connection in held:
                pool.release(connection)
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        error = response.json()["error"]
        assert error["type"] == "overloaded" and "AGENT_API_REDIS_CONNECTIONS" in error["message"]
        assert (await client.get("/jobs/anything")).status_code == 404  # the connections are back

    asyncio.run(_in_process(scenario))


def test_redis_down_is_still_redis_unavailable(app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")

    async def scenario(client: httpx.AsyncClient, state: ApiState) -> None:
        response = await client.get("/jobs/anything")
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "redis_unavailable"

    asyncio.run(_in_process(scenario))
