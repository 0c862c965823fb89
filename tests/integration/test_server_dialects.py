"""Real servers' dialects through real workers, the API and the mock LLM (issue 13, points 1, 2, 6).

- a server that never sends usage (llama-cpp-python): the answer's usage and [STATS] are counted
  by llmpool, non-zero and marked estimated, in the job record, the text stream and /v1;
- a stream cut with `data: [DONE]` and no finish_reason after some tokens: the job fails over, the
  text stream says [RESET] and then the second endpoint's whole answer; the cut is charged;
- 8 chats at once at a server that cuts its running streams for each new request: all answered
  whole (by it, or by the other endpoint after a cut), none a cut answer taken for a success;
- a malformed message from a producer that skipped validation: the worker fails the job as the
  caller's (invalid_job) and no LLM sees a request, though the mock would answer it with a 500.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmpool.client import publish_chat
from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from llmpool.errors import InvalidJob
from tests.pool import Pool, pool_with_api

pytestmark = pytest.mark.timeout(120)

PRIMARY, BACKUP = deploy_id("primary"), deploy_id("backup")
MALFORMED = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]  # null content, no calls


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pool, str]]:
    tmp = tmp_path_factory.mktemp("dialects")
    containers = [ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.01),
                  ContainerSpec(name="backup", model_name="Llama-3.1-8B-Instruct", ttft=0.01)]
    with RedisServer(data_dir=tmp / "redis") as server:
        mock = MockLLM(containers=containers).start()
        with pool_with_api(tmp, server, mock, workers=1, threads=4, agent_poll_builtin_tools="false",
                           agent_priority_models="llama-3.1-70b,llama-3.1-8b") as started:
            yield started


@pytest.fixture(autouse=True)
def plain(stack: tuple[Pool, str]) -> Iterator[None]:
    yield
    for name in ("primary", "backup"):
        stack[0].mock.configure(name, fault="none", send_usage=True, interrupt_requests=False, tokens_per_second=50)


def _text(api: str, message: str) -> tuple[str, str]:
    """The text stream of /poll_requests, and the job's id."""
    with httpx.stream("POST", api + "/poll_requests", json={"message": message}, timeout=30) as response:
        assert response.status_code == 200
        return "".join(response.iter_text()), response.headers["x-job-id"]


def _stats(text: str) -> dict[str, Any]:
    return dict(json.loads(text.split("[STATS]")[1]))


def test_a_server_without_usage_gets_estimated_usage_everywhere(stack: tuple[Pool, str]) -> None:
    pool, api = stack
    pool.mock.configure("primary", send_usage=False)
    text, job_id = _text(api, "count me")
    stats = _stats(text)
    assert text.startswith("Hello from primary! You said: count me")
    assert stats["tokens_decoded"] == len("Hello from primary! You said: count me".split())  # a chunk a token
    assert stats["tokens_estimated"] is True and stats["tpot"] is not None
    result = (pool.store.get(job_id) or {})["result"]
    assert result["finish_reason"] == "stop"
    assert result["usage"]["estimated"] and result["usage"]["prompt_tokens"] > 0
    assert result["usage"]["total_tokens"] == result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]
    body = httpx.post(api + "/v1/chat/completions", timeout=30,
                      json={"model": "auto", "messages": [{"role": "user", "content": "count me too"}]}).json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["estimated"] is True and body["usage"]["completion_tokens"] > 0
    capped = httpx.post(api + "/v1/chat/completions", timeout=30, json={
        "model": "auto", "max_tokens": 2, "messages": [{"role": "user", "content": "count me"}]}).json()
    assert capped["choices"][0]["finish_reason"] == "length"  # the server's reason, kept end to end
    assert capped["usage"]["completion_tokens"] == 2  # the two chunks it streamed
    pool.mock.configure("primary", send_usage=True)
    assert "estimated" not in httpx.post(api + "/v1/chat/completions", timeout=30, json={
        "model": "auto", "messages": [{"role": "user", "content": "count me"}]}).json()["usage"]


def test_a_stream_cut_with_done_fails_over_and_resets_the_reader(stack: tuple[Pool, str]) -> None:
    pool, api = stack
    failures = pool.admitter.stats([PRIMARY])[PRIMARY]["failures"]
    pool.mock.configure("primary", tokens_per_second=10, drop_after_tokens=3)  # tokens reach the reader first
    pool.mock.set_fault("primary", "cut_stream", requests=1)
    text, job_id = _text(api, "cut me")
    partial, rest = text.split("\n[RESET]\n")
    assert partial == "Hello from primary!"  # the 3 tokens that came before the [DONE]
    assert rest.split("[STATS]")[0] == "Hello from backup! You said: cut me"  # the next endpoint, whole
    record = pool.store.get(job_id) or {}
    assert record["result"]["endpoint"] == BACKUP and record["result"]["finish_reason"] == "stop"
    assert pool.admitter.stats([PRIMARY])[PRIMARY]["failures"] == failures + 1  # charged, not a success


def test_a_malformed_message_fails_the_job_and_no_llm_sees_it(stack: tuple[Pool, str]) -> None:
    pool, api = stack
    for name in ("primary", "backup"):
        pool.mock.set_fault(name, "validation_500")  # llama-cpp-python's 500: a breaker's failure, if sent
    before = {name: pool.mock.stats(name)["chat_requests"] for name in ("primary", "backup")}
    breakers = pool.admitter.stats([PRIMARY, BACKUP])
    job_id, payload = uuid.uuid4().hex, {"messages": MALFORMED}
    assert pool.store.create(job_id, queue="chat.default", deadline=time.time() + 30, summary="raw",
                             payload=payload)  # another producer: no validation before the queue
    publish_chat(pool.app, job_id, "chat.default", payload)
    record = pool.finished([job_id], timeout=30)[0]
    assert record["state"] == "failed" and record["error"]["type"] == "invalid_job", record
    assert "content is required" in record["error"]["message"]
    with pytest.raises(InvalidJob):  # the Client refuses it before storing anything
        pool.client.submit({"messages": MALFORMED})
    refused = httpx.post(api + "/v1/chat/completions", json={"model": "auto", "messages": MALFORMED}, timeout=10)
    assert refused.status_code == 422
    assert {name: pool.mock.stats(name)["chat_requests"] for name in ("primary", "backup")} == before
    after = pool.admitter.stats([PRIMARY, BACKUP])
    assert [after[e]["failures"] for e in (PRIMARY, BACKUP)] == [breakers[e]["failures"] for e in (PRIMARY, BACKUP)]


def test_eight_chats_at_an_interrupting_server_all_come_back_whole(stack: tuple[Pool, str]) -> None:
    """The issue's llama-cpp-python run: 8 chats at once, each new request cutting the running streams.

    None may come back as a success with a cut answer: every cut call fails over (or waits), so
    each answer is some endpoint's whole reply.
    """
    pool, _ = stack
    pool.mock.configure("primary", interrupt_requests=True, send_usage=False)
    job_ids = pool.submit(8)
    records = pool.finished(job_ids, timeout=60)
    assert [r["state"] for r in records] == ["succeeded"] * 8, records
    for n, record in enumerate(records):
        result = record["result"]
        name = "primary" if result["endpoint"] == PRIMARY else "backup"
        assert result["content"] == f"Hello from {name}! You said: job {n}" and result["finish_reason"] == "stop"
        assert result["usage"]["completion_tokens"] > 0
    cut = [r for r in records if any(h.get("error") == "incomplete_answer" for h in r.get("history") or [])]
    assert cut, [r.get("history") for r in records]  # the server did interrupt: the answers above are whole anyway
