"""The tool loop end to end: the API, real Celery workers, the mock LLM scripted to call tools
(knob `tool_script`), web_search and run_code against the mock Tavily and E2B servers (real HTTP,
llmpool.dev.mock_tools). One pool for the module; the worker-death test runs last (it kills a worker)."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from starlette.requests import Request
from starlette.responses import Response

from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.mock_llm.replies import ARGUMENT_PIECE, tokenize
from llmpool.dev.mock_tools import MockTavily, MockTools
from llmpool.dev.redis_server import RedisServer
from tests.pool import Pool, pool_with_api
from tests.processes import wait_for

MODEL = "tools"  # the container that can call tools
PLAIN = "Plain-7B"  # the model of one that cannot
MAX_STEPS = 2


class HoldingTavily(MockTavily):
    """D's mock Tavily, plus: the second search for a query starting "block" hangs until `release(query)`
    (at most 20 s), so a test can act while a job's second round runs."""

    def __init__(self) -> None:
        super().__init__()
        self.releases: dict[str, threading.Event] = {}

    def queries(self, query: str) -> int:
        return sum(1 for body in list(self.requests) if body.get("query") == query)

    def release(self, query: str) -> None:
        self.releases.setdefault(query, threading.Event()).set()

    async def _search(self, request: Request) -> Response:
        body = json.loads(await request.body())
        query = str(body.get("query"))
        if query.startswith("block") and self.queries(query) == 1:  # this is the second
            self.requests.append({"query": query})
            gate = self.releases.setdefault(query, threading.Event())
            for _ in range(400):
                if gate.is_set() or self.stopping:
                    break
                await asyncio.sleep(0.05)
            self.requests.pop()  # counted again by the answer below
        return await super()._search(request)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pool, str, MockTools]]:
    tmp = tmp_path_factory.mktemp("tools")
    specs = [ContainerSpec(name=MODEL, tool_calling_enabled=True, ttft=0, tokens_per_second=0),
             ContainerSpec(name="plain", model_name=PLAIN, ttft=0, tokens_per_second=0)]
    with MockTools(tavily=HoldingTavily()) as tools, RedisServer(data_dir=tmp / "redis") as server:
        mock = MockLLM(containers=specs).start()
        with pool_with_api(tmp, server, mock, workers=2, threads=4, tavily_api_key=tools.tavily.api_key,
                           agent_tavily_url=tools.tavily_url, e2b_api_key=tools.e2b.api_key,
                           e2b_api_url=tools.e2b_url, e2b_sandbox_url=tools.e2b_url,
                           agent_tool_max_steps=MAX_STEPS, agent_job_lease=3, agent_sweep_interval=1,
                           agent_job_max_attempts=3) as (pool, url):
            yield pool, url, tools


@pytest.fixture
def mocks(stack: tuple[Pool, str, MockTools]) -> Iterator[tuple[Pool, str, MockTools]]:
    """The module's stack with the tool mocks at their defaults for each test."""
    stack[2].reset()
    yield stack


def script(pool: Pool, tool: str, arguments: dict[str, Any], **more: Any) -> None:
    pool.mock.configure(MODEL, tool_script={"tool": tool, "arguments": arguments, **more})


def poll(url: str, message: str, **body: Any) -> tuple[str, str]:
    """POST /poll_requests as TT-Studio does: the text stream and the job's id."""
    response = httpx.post(f"{url}/poll_requests", json={"message": message, **body}, timeout=60)
    return response.text, response.headers.get("x-job-id", "")


def record(pool: Pool, job_id: str) -> dict[str, Any]:
    (done,) = pool.finished([job_id], timeout=60)
    return done


Mocks = tuple[Pool, str, MockTools]


def test_search_then_answer_shows_the_step_in_a_think_block(mocks: Mocks) -> None:
    pool, url, tools = mocks
    script(pool, "web_search", {"query": "capital of France"})
    text, job_id = poll(url, "What is the capital of France?")
    think, answer = text.split("</think>\n\n")
    assert think.startswith('<think>\nUsing tool: web_search {"query": "capital of France"}\nResult (')
    assert 'results for "capital of France"' in think
    assert answer.startswith("The tool said: 1. Result 1 about capital of France") and "[STATS]" in answer
    assert [r["query"] for r in tools.tavily.requests] == ["capital of France"]
    done = record(pool, job_id)
    steps = [h for h in done["history"] if h.get("event") == "tool"]
    assert [(s["tool"], s["error"], s["round"]) for s in steps] == [("web_search", None, 1)]
    assert steps[0]["size"] > 0 and done["result"]["steps"][0]["call_id"] == steps[0]["call_id"]
    assert tools.tavily.api_key not in json.dumps(done) + text


def test_code_then_answer_in_an_e2b_sandbox(mocks: Mocks) -> None:
    pool, url, tools = mocks
    script(pool, "run_code", {"code": "print(6 * 7)"})
    text, job_id = poll(url, "Compute six times seven")
    assert 'Using tool: run_code {"code": "print(6 * 7)"}' in text and "</think>" in text
    assert text.split("</think>\n\n")[1].startswith("The tool said: stdout: 42[STATS]")
    assert tools.e2b.executions == ["print(6 * 7)"] and tools.e2b.live() == []  # its sandbox was killed
    assert tools.e2b.api_key not in json.dumps(record(pool, job_id)) + text


def test_a_failing_tool_goes_back_to_the_llm_and_the_job_succeeds(mocks: Mocks) -> None:
    pool, url, tools = mocks
    tools.tavily.fault = "500"
    script(pool, "web_search", {"query": "broken"})
    text, job_id = poll(url, "search something broken")
    assert "Tool error (http_error)" in text and "The tool said: [tool error: http_error]" in text
    assert record(pool, job_id)["state"] == "succeeded" and len(tools.tavily.requests) == 1


def test_the_step_limit_stops_a_model_that_never_answers(mocks: Mocks) -> None:
    pool, _, tools = mocks
    script(pool, "web_search", {"query": "again"}, always=True)
    job_id = pool.client.submit("loop forever", tools="builtin").job_id
    done = record(pool, job_id)
    assert (done["state"], done["error"]["type"]) == ("failed", "tool_step_limit")
    assert len(tools.tavily.requests) == MAX_STEPS
    assert len([h for h in done["history"] if h.get("event") == "tool"]) == MAX_STEPS


def test_the_deadline_stops_a_loop_that_never_answers(mocks: Mocks) -> None:
    pool, _, tools = mocks
    tools.tavily.fault, tools.tavily.delay = "slow", 2.0
    script(pool, "web_search", {"query": "slow"}, always=True)
    job_id = pool.client.submit("slow forever", tools="builtin", deadline=time.time() + 3).job_id
    done = record(pool, job_id)
    assert done["state"] == "expired"
    assert 1 <= len(tools.tavily.requests) <= MAX_STEPS


def test_a_job_asking_for_tools_of_a_model_that_cannot_call_them_fails_at_once(mocks: Mocks) -> None:
    pool, url, _ = mocks
    job_id = pool.client.submit("hi", tools="builtin", model=PLAIN).job_id
    done = record(pool, job_id)
    assert (done["state"], done["error"]["type"]) == ("failed", "no_tool_capable_llm")
    text, _ = poll(url, "hi", model=PLAIN)  # /poll_requests' default ("auto") answers without tools
    assert text.startswith("Hello from plain") and "<think>" not in text


def test_a_client_turns_the_tools_off_or_asks_for_them_on_post_jobs(mocks: Mocks) -> None:
    pool, url, tools = mocks
    script(pool, "web_search", {"query": "unwanted"})
    text, _ = poll(url, "no tools please", tools="none")
    assert text.startswith("Hello from tools") and tools.tavily.requests == []
    submitted = httpx.post(f"{url}/jobs", json={"message": "search", "tools": "builtin"}, timeout=30).json()
    assert record(pool, submitted["job_id"])["result"]["steps"][0]["tool"] == "web_search"


def test_sse_and_openai_streams_carry_the_steps(mocks: Mocks) -> None:
    pool, url, _ = mocks
    script(pool, "web_search", {"query": "openai shape"})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    chunks = list(client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "search please"}], stream=True,
        extra_headers={"X-LLMPool-Tools": "builtin"}))
    (step,) = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert step.tool_calls is not None and step.tool_calls[0].function is not None
    assert step.tool_calls[0].function.name == "web_search"
    assert (step.model_extra or {})["llmpool_tool_result"]["content"].endswith('results for "openai shape"')
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("The tool said: 1. Result 1 about openai shape")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    whole = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "again"}],
                                           extra_headers={"X-LLMPool-Tools": "builtin"})
    assert (whole.model_extra or {})["llmpool_steps"][0]["tool"] == "web_search"
    job_id = pool.client.submit("search for events", tools="builtin").job_id
    record(pool, job_id)
    events = httpx.get(f"{url}/jobs/{job_id}/events", timeout=30).text
    step_event = next(block for block in events.split("\n\n") if block.startswith("event: step"))
    assert json.loads(step_event.split("data: ")[1])["tool"] == "web_search"


def test_a_job_cancelled_while_its_tool_runs_makes_no_further_call(mocks: Mocks) -> None:
    pool, url, tools = mocks
    tavily: HoldingTavily = tools.tavily  # type: ignore[assignment]
    script(pool, "web_search", {"query": "block-cancel"}, calls=3)
    job_id = pool.client.submit("three searches", tools="builtin").job_id
    wait_for(lambda: tavily.queries("block-cancel") == 2, timeout=20, what="the second round's search")
    assert httpx.delete(f"{url}/jobs/{job_id}", timeout=10).status_code == 200
    tavily.release("block-cancel")
    done = record(pool, job_id)
    assert done["state"] == "cancelled"
    time.sleep(1)  # a run that went on would search a third time now
    assert tavily.queries("block-cancel") == 2
    assert [h["round"] for h in (pool.store.get(job_id) or {})["history"] if h.get("event") == "tool"] == [1]


def test_a_worker_killed_between_rounds_is_resumed_without_repeating_them(mocks: Mocks) -> None:
    pool, _, tools = mocks
    tavily: HoldingTavily = tools.tavily  # type: ignore[assignment]
    script(pool, "web_search", {"query": "block"}, calls=2)
    job_id = pool.client.submit("two searches", tools="builtin", deadline=time.time() + 60).job_id
    wait_for(lambda: tavily.queries("block") == 2, timeout=20, what="the second round's search")
    worker = str((pool.store.get(job_id) or {}).get("worker"))
    victim = next(w for w in pool.workers if w.name == f"worker {worker.split('@')[0]}")
    victim.kill()
    tavily.release("block")
    done = record(pool, job_id)
    assert done["state"] == "succeeded", done
    # From the start it would be 4 searches (1, 2 killed, 1 again, 2 again): resumed, round 1 is not repeated.
    assert tavily.queries("block") == 3
    rounds = [h["round"] for h in done["history"] if h.get("event") == "tool"]
    assert rounds == [1, 2] and done["claims"] >= 2
    # Its usage counts round 1's call (the killed run's, from the checkpoint), round 2's (made again)
    # and the answer's: the mock counts a tool call as its name plus its arguments in 8-character pieces.
    call_tokens = 1 + math.ceil(len(json.dumps({"query": "block"})) / ARGUMENT_PIECE)
    usage = done["result"]["usage"]
    assert usage["completion_tokens"] == 2 * call_tokens + len(tokenize(done["result"]["content"]))
    assert not usage["estimated"] and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
