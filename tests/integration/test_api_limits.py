"""Bad input on the shim: each limit refused with its status and the field named, nothing enqueued.

In-process (httpx's ASGI transport) with a real Redis behind it and no worker: a request that got
past the limits would leave a job record and a queued message, which each case looks for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from llmpool.keys import Keys
from llmpool.schemas import QUEUES
from llmpool.settings import get_settings
from tests.asgi_app import run_against_app
from tests.processes import clean_env

LIMITS = {"agent_api_max_body_bytes": 4096, "agent_api_max_message_chars": 100, "agent_api_max_messages": 3,
          "agent_api_max_thread_id": 16, "agent_api_max_tokens": 500, "agent_api_max_tools": 2}


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    for name, value in clean_env(redis_url=redis_url, agent_api_redis_connections=8, **LIMITS).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()




def _enqueued(client: redis.Redis) -> tuple[int, int]:
    """Job records and queued messages: what an accepted request leaves behind."""
    records = sum(1 for _ in client.scan_iter(match=Keys().job("*")))
    return records, sum(int(client.llen(Keys.celery_queue(q))) for q in QUEUES)


def _tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


FIELD_CASES = [
    ("message length", "/poll_requests", {"message": "x" * 101}, "AGENT_API_MAX_MESSAGE_CHARS"),
    ("thread_id length", "/poll_requests", {"message": "hi", "thread_id": "t" * 17}, "AGENT_API_MAX_THREAD_ID"),
    ("max_tokens", "/poll_requests", {"message": "hi", "max_tokens": 501}, "AGENT_API_MAX_TOKENS"),
    ("tools count", "/poll_requests", {"message": "hi", "tools": [_tool("a"), _tool("b"), _tool("c")]},
     "AGENT_API_MAX_TOOLS"),
    ("message count", "/v1/chat/completions",
     {"model": "auto", "messages": [{"role": "user", "content": "hi"}] * 4}, "AGENT_API_MAX_MESSAGES"),
    ("v1 message length", "/v1/chat/completions",
     {"model": "auto", "messages": [{"role": "user", "content": "y" * 101}]}, "AGENT_API_MAX_MESSAGE_CHARS"),
]


@pytest.mark.parametrize(("case", "path", "body", "variable"), FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_a_field_past_its_limit_is_422_naming_it_and_nothing_is_enqueued(
        app_env: None, redis_client: redis.Redis, case: str, path: str, body: dict[str, Any], variable: str) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post(path, json=body, headers={"Accept": "application/json"})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert variable in error["message"]

    run_against_app(scenario)
    assert _enqueued(redis_client) == (0, 0)


@pytest.mark.parametrize("thread_id", ["has space", "a\nb", "x{y}", "ü", "a*b"])
def test_a_thread_id_with_other_characters_is_422(app_env: None, redis_client: redis.Redis, thread_id: str) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post("/poll_requests", json={"message": "hi", "thread_id": thread_id},
                                     headers={"Accept": "application/json"})
        assert response.status_code == 422 and "thread_id" in response.json()["error"]["message"]

    run_against_app(scenario)
    assert _enqueued(redis_client) == (0, 0)


def test_a_body_past_the_limit_is_413_by_its_length_or_as_it_streams(app_env: None, redis_client: redis.Redis) -> None:
    big = b'{"message": "' + b"x" * 5000 + b'"}'

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000]

    async def scenario(client: httpx.AsyncClient) -> None:
        for path in ("/poll_requests", "/v1/chat/completions"):
            declared = await client.post(path, content=big, headers={"Content-Type": "application/json"})
            assert declared.status_code == 413, declared.text
            assert "AGENT_API_MAX_BODY_BYTES" in declared.text
            streamed = await client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
            assert streamed.status_code == 413, streamed.text
            assert "AGENT_API_MAX_BODY_BYTES" in streamed.text
        assert (await client.post("/poll_requests", content=big)).json()["error"]["type"] == "body_too_large"
        assert (await client.post("/v1/chat/completions", content=big)).json()["error"]["code"] == "body_too_large"

    run_against_app(scenario)
    assert _enqueued(redis_client) == (0, 0)


def test_malformed_json_is_400_and_invalid_fields_422(app_env: None, redis_client: redis.Redis) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        malformed = await client.post("/poll_requests", content=b'{"message": "hi"',
                                      headers={"Content-Type": "application/json"})
        assert malformed.status_code == 400
        assert malformed.json()["error"]["type"] == "malformed_json"
        invalid = await client.post("/poll_requests", json={"message": "hi", "priority": "urgent"})
        assert invalid.status_code == 422 and "priority" in invalid.json()["error"]["message"]
        missing = await client.post("/poll_requests", json={"thread_id": "t"})
        assert missing.status_code == 422 and "message" in missing.json()["error"]["message"]

    run_against_app(scenario)
    assert _enqueued(redis_client) == (0, 0)
