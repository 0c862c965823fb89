"""The official `openai` package against /v1 (real API under uvicorn, a real worker, the mock LLM).

One fleet for the module: a 70B container (selected: it ranks first) and an 8B one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import openai
import pytest
import redis

from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from llmpool.keys import Keys
from tests.pool import Pool, pool_with_api
from tests.processes import start_api

BIG, SMALL = "Llama-3.1-70B-Instruct", "Llama-3.1-8B-Instruct"
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pool, str]]:
    tmp = tmp_path_factory.mktemp("openai")
    with RedisServer(data_dir=tmp / "redis") as server:
        mock = MockLLM(containers=[ContainerSpec(name="big", model_name=BIG, ttft=0.01),
                                   ContainerSpec(name="small", model_name=SMALL, ttft=0.01)]).start()
        with pool_with_api(tmp, server, mock, workers=1, threads=8,
                           agent_model_aliases=json.dumps({"gpt-4o-mini": SMALL})) as running:
            yield running


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


def _job_count(pool: Pool) -> int:
    client = redis.Redis.from_url(pool.server.url)
    try:
        return sum(1 for _ in client.scan_iter(match=Keys().job("*")))
    finally:
        client.close()


def test_models_lists_every_served_model_and_the_alias(api: tuple[Pool, str]) -> None:
    pool, url = api
    assert pool.registry.selection().current.model_name == BIG  # type: ignore[union-attr]
    ids = [m.id for m in _client(url).models.list()]
    assert ids == [f"meta-llama/{BIG}", f"meta-llama/{SMALL}", "gpt-4o-mini"]


def test_sync_client_completes_and_streams_with_usage(api: tuple[Pool, str]) -> None:
    _pool, url = api
    client = _client(url)
    done = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=20, temperature=0.2, top_p=0.9, seed=1, stop=["zzz"],
                                          user="u-1")
    assert done.choices[0].message.content and done.choices[0].finish_reason in ("stop", "length")
    assert done.usage is not None and done.usage.completion_tokens > 0
    assert done.model == f"meta-llama/{BIG}"  # auto: the selection
    chunks = list(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}],
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_async_client_completes_and_streams(api: tuple[Pool, str]) -> None:
    _pool, url = api

    async def scenario() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30) as client:
            done = await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
            stream = await client.chat.completions.create(model="auto", stream=True,
                                                          messages=[{"role": "user", "content": "hi"}])
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return done.choices[0].message.content or "", text

    whole, streamed = asyncio.run(scenario())
    assert whole and streamed


def test_tools_get_tool_calls_back_plain_and_streamed(api: tuple[Pool, str]) -> None:
    _pool, url = api
    client = _client(url)
    ask = [{"role": "user", "content": "use the tool for Paris"}]
    done = client.chat.completions.create(model="auto", messages=ask, tools=TOOLS, tool_choice="auto")  # type: ignore[arg-type]
    assert done.choices[0].finish_reason == "tool_calls"
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and call.id  # type: ignore[union-attr]
    chunks = list(client.chat.completions.create(model="auto", messages=ask, tools=TOOLS, stream=True))  # type: ignore[arg-type]
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert [t.function.name for t in calls] == ["get_weather"]  # type: ignore[union-attr]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


@pytest.mark.parametrize("model", [f"meta-llama/{SMALL}", SMALL.upper(), "gpt-4o-mini"])
def test_a_job_naming_the_8b_model_is_served_by_the_8b_while_the_70b_is_selected(
        api: tuple[Pool, str], model: str) -> None:
    pool, url = api
    raw = _client(url).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello"}],
        extra_headers={"X-LLMPool-Priority": "high"})
    assert raw.parse().model == f"meta-llama/{SMALL}"
    record = pool.store.get(raw.headers["x-job-id"]) or {}
    assert record["result"]["endpoint"] == deploy_id("small")
    assert pool.registry.selection().current.id == deploy_id("big")  # type: ignore[union-attr]


def test_an_unknown_model_is_404_model_not_found_and_nothing_is_enqueued(api: tuple[Pool, str]) -> None:
    pool, url = api
    before = _job_count(pool)
    with pytest.raises(openai.NotFoundError) as caught:
        _client(url).chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found" and caught.value.param == "model"  # type: ignore[attr-defined]
    assert _job_count(pool) == before


def test_what_llmpool_cannot_honour_is_400_naming_the_field(api: tuple[Pool, str]) -> None:
    pool, url = api
    before = _job_count(pool)
    with pytest.raises(openai.BadRequestError) as caught:
        _client(url).chat.completions.create(model="auto", n=2, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.param == "n" and "'n'" in caught.value.message  # type: ignore[attr-defined]
    malformed = httpx.post(url + "/v1/chat/completions", content=b"{not json",
                           headers={"Content-Type": "application/json"}, timeout=10)
    assert malformed.status_code == 400 and malformed.json()["error"]["type"] == "invalid_request_error"
    invalid = httpx.post(url + "/v1/chat/completions", json={"model": "auto", "messages": []}, timeout=10)
    assert invalid.status_code == 422 and invalid.json()["error"]["param"] == "messages"
    bad_priority = httpx.post(url + "/v1/chat/completions", headers={"X-LLMPool-Priority": "urgent"},
                              json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert bad_priority.status_code == 422 and "x-llmpool-priority" in bad_priority.json()["error"]["param"]
    past = httpx.post(url + "/v1/chat/completions", headers={"X-LLMPool-Deadline": "1000"},
                      json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert past.status_code == 422 and past.json()["error"]["param"] == "X-LLMPool-Deadline"
    nameless = httpx.post(url + "/v1/chat/completions", timeout=10, json={
        "model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]})
    assert nameless.status_code == 422 and "tools" in nameless.json()["error"]["message"]
    assert _job_count(pool) == before


def test_an_idempotency_key_answers_the_same_job_again(api: tuple[Pool, str]) -> None:
    _pool, url = api
    client = _client(url)
    ask: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hello"}],
                           "extra_headers": {"Idempotency-Key": "openai-test-key-1"}}
    first = client.chat.completions.create(**ask)
    again = client.chat.completions.create(**ask)
    assert again.id == first.id and again.choices[0].message.content == first.choices[0].message.content


def test_poll_requests_refuses_an_unknown_model_with_nothing_enqueued(api: tuple[Pool, str]) -> None:
    pool, url = api
    before = _job_count(pool)
    answer = httpx.post(url + "/poll_requests", json={"message": "hi", "model": "no-such-model"},
                        headers={"Accept": "application/json"}, timeout=10)
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "model_not_found"
    assert _job_count(pool) == before
    served = httpx.post(url + "/poll_requests", json={"message": "hi", "model": "gpt-4o-mini"},
                        headers={"Accept": "application/json"}, timeout=30)
    assert served.status_code == 200 and served.json()["endpoint"] == deploy_id("small")


def test_a_worker_fails_a_job_whose_model_no_endpoint_serves_with_model_not_found(api: tuple[Pool, str]) -> None:
    pool, _url = api  # the Client does not check the registry: as if the model vanished after submit
    job_id = pool.client.submit("hi", model="vanished-model").job_id
    [record] = pool.finished([job_id], timeout=30)
    assert record["state"] == "failed" and record["error"]["type"] == "model_not_found"
    assert record["error"]["param"] == "model"


def test_with_auth_on_the_openai_client_sends_its_jwt_as_api_key_and_jobs_stay_their_subjects(
        api: tuple[Pool, str], tmp_path: Path) -> None:
    pool, _url = api
    secret = "openai-test-secret-0123456789abcdef"
    proc, url = start_api(tmp_path, {**pool.env, "AGENT_API_JWT_SECRET": secret})
    try:
        def token(sub: str) -> str:
            return jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, secret, algorithm="HS256")

        with pytest.raises(openai.AuthenticationError):
            _client(url).models.list()
        alice = openai.OpenAI(base_url=url + "/v1", api_key=token("alice"), max_retries=0, timeout=30)
        raw = alice.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hello"}])
        assert raw.parse().choices[0].message.content
        job_id = raw.headers["x-job-id"]
        mine = httpx.get(f"{url}/jobs/{job_id}", headers={"Authorization": f"Bearer {token('alice')}"}, timeout=10)
        theirs = httpx.get(f"{url}/jobs/{job_id}", headers={"Authorization": f"Bearer {token('bob')}"}, timeout=10)
        assert mine.status_code == 200 and theirs.status_code == 404
    finally:
        proc.stop()
