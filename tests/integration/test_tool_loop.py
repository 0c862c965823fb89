"""The tool loop end to end: the API, real Celery workers, the mock LLM scripted to call tools
(knob `tool_script`), web_search against a small Tavily-shaped HTTP server of this test (it
counts the searches), run_code in the local sandbox. One pool for the module; the worker-death
test runs last (it kills a worker)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer
from tests.pool import Pool, pool_with_api
from tests.processes import wait_for

MODEL = "tools"  # the container that can call tools
PLAIN = "Plain-7B"  # the model of one that cannot
MAX_STEPS = 2


class TavilyServer:
    """POST /search like Tavily: one result naming the query. Query "fail" is a 500, "slow" takes
    2 s, the second search for a query starting "block" waits until `release(query)` (at most 20 s)."""

    def __init__(self) -> None:
        self.queries: Counter[str] = Counter()
        self.releases: dict[str, threading.Event] = {}  # query -> ends the hang of its second search
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                query = str(body.get("query"))
                outer.queries[query] += 1
                if query == "slow":
                    time.sleep(2)
                if query.startswith("block") and outer.queries[query] == 2:  # the second round's search hangs
                    outer.releases.setdefault(query, threading.Event()).wait(20)
                status = 500 if query == "fail" else 200
                answer = {"results": [{"title": f"Result for {query}", "url": "https://example.com/1",
                                       "content": "Paris is lovely"}]} if status == 200 else {"detail": "boom"}
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> TavilyServer:
        self.thread.start()
        return self

    def release(self, query: str) -> None:
        self.releases.setdefault(query, threading.Event()).set()

    def __exit__(self, *exc: object) -> None:
        for event in list(self.releases.values()):
            event.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pool, str, TavilyServer]]:
    tmp = tmp_path_factory.mktemp("tools")
    specs = [ContainerSpec(name=MODEL, tool_calling_enabled=True, ttft=0, tokens_per_second=0),
             ContainerSpec(name="plain", model_name=PLAIN, ttft=0, tokens_per_second=0)]
    with TavilyServer() as tavily, RedisServer(data_dir=tmp / "redis") as server:
        mock = MockLLM(containers=specs).start()
        with pool_with_api(tmp, server, mock, workers=2, threads=4, tavily_api_key="test-key",
                           agent_tavily_url=tavily.url, agent_local_code_execution="true",
                           agent_tool_max_steps=MAX_STEPS, agent_job_lease=3, agent_sweep_interval=1,
                           agent_job_max_attempts=3) as (pool, url):
            yield pool, url, tavily


def script(pool: Pool, tool: str, arguments: dict[str, Any], **more: Any) -> None:
    pool.mock.configure(MODEL, tool_script={"tool": tool, "arguments": arguments, **more})


def poll(url: str, message: str, **body: Any) -> tuple[str, str]:
    """POST /poll_requests as TT-Studio does: the text stream and the job's id."""
    response = httpx.post(f"{url}/poll_requests", json={"message": message, **body}, timeout=60)
    return response.text, response.headers.get("x-job-id", "")


def record(pool: Pool, job_id: str) -> dict[str, Any]:
    (done,) = pool.finished([job_id], timeout=60)
    return done


def test_search_then_answer_shows_the_step_in_a_think_block(stack: tuple[Pool, str, TavilyServer]) -> None:
    pool, url, tavily = stack
    script(pool, "web_search", {"query": "capital of France"})
    text, job_id = poll(url, "What is the capital of France?")
    think, answer = text.split("</think>\n\n")
    assert think.startswith("<think>\nUsing tool: web_search {\"query\": \"capital of France\"}\nResult (")
    assert '1 results for "capital of France"' in think
    assert answer.startswith("The tool said: 1. Result for capital of France") and "[STATS]" in answer
    assert tavily.queries["capital of France"] == 1
    done = record(pool, job_id)
    steps = [h for h in done["history"] if h.get("event") == "tool"]
    assert [(s["tool"], s["error"], s["round"]) for s in steps] == [("web_search", None, 1)]
    assert steps[0]["size"] > 0 and done["result"]["steps"][0]["call_id"] == steps[0]["call_id"]
    assert "test-key" not in json.dumps(done)


def test_code_then_answer_through_the_local_sandbox(stack: tuple[Pool, str, TavilyServer]) -> None:
    pool, url, _ = stack
    script(pool, "run_code", {"code": "print(6 * 7)"})
    text, _ = poll(url, "Compute six times seven")
    assert "Using tool: run_code" in text and "</think>" in text
    assert "42" in text.split("</think>")[1]


def test_a_failing_tool_goes_back_to_the_llm_and_the_job_succeeds(stack: tuple[Pool, str, TavilyServer]) -> None:
    pool, url, tavily = stack
    script(pool, "web_search", {"query": "fail"})
    text, job_id = poll(url, "search something broken")
    assert "Tool error (http_error)" in text and "The tool said: [tool error: http_error]" in text
    assert record(pool, job_id)["state"] == "succeeded" and tavily.queries["fail"] == 1


def test_the_step_limit_stops_a_model_that_never_answers(stack: tuple[Pool, str, TavilyServer]) -> None:
    pool, _, tavily = stack
    script(pool, "web_search", {"query": "again"}, always=True)
    job_id = pool.client.submit("loop forever", tools="builtin").job_id
    done = record(pool, job_id)
    assert (done["state"], done["error"]["type"]) == ("failed", "tool_step_limit")
    assert tavily.queries["again"] == MAX_STEPS
    assert len([h for h in done["history"] if h.get("event") == "tool"]) == MAX_STEPS


def test_the_deadline_stops_a_loop_that_never_answers(stack: tuple[Pool, str, TavilyServer]) -> None:
    pool, _, tavily = stack
    script(pool, "web_search", {"query": "slow"}, always=True)
    job_id = pool.client.submit("slow forever", tools="builtin", deadline=time.time() + 3).job_id
    done = record(pool, job_id)
    assert done["state"] == "expired"
    assert 1 <= tavily.queries["slow"] <= MAX_STEPS


def test_a_job_asking_for_tools_of_a_model_that_cannot_call_them_fails_at_once(
        stack: tuple[Pool, str, TavilyServer]) -> None:
    pool, url, _ = stack
    job_id = pool.client.submit("hi", tools="builtin", model=PLAIN).job_id
    done = record(pool, job_id)
    assert (done["state"], done["error"]["type"]) == ("failed", "no_tool_capable_llm")
    text, _ = poll(url, "hi", model=PLAIN)  # /poll_requests' default ("auto") answers without tools
    assert text.startswith("Hello from plain") and "<think>" not in text


def test_sse_and_openai_streams_carry_the_steps(stack: tuple[Pool, str, TavilyServer]) -> None:
    pool, url, _ = stack
    script(pool, "web_search", {"query": "openai shape"})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    chunks = list(client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "search please"}], stream=True,
        extra_headers={"X-LLMPool-Tools": "builtin"}))
    (step,) = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert step.tool_calls is not None and step.tool_calls[0].function is not None
    assert step.tool_calls[0].function.name == "web_search"
    assert (step.model_extra or {})["llmpool_tool_result"]["content"] == '1 results for "openai shape"'
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("The tool said: 1. Result for openai shape")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    whole = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "again"}],
                                           extra_headers={"X-LLMPool-Tools": "builtin"})
    assert (whole.model_extra or {})["llmpool_steps"][0]["tool"] == "web_search"
    job_id = pool.client.submit("search for events", tools="builtin").job_id
    record(pool, job_id)
    events = httpx.get(f"{url}/jobs/{job_id}/events", timeout=30).text
    step_event = next(block for block in events.split("\n\n") if block.startswith("event: step"))
    assert json.loads(step_event.split("data: ")[1])["tool"] == "web_search"


def test_a_job_cancelled_while_its_tool_runs_makes_no_further_call(stack: tuple[Pool, str, TavilyServer]) -> None:
    pool, url, tavily = stack
    script(pool, "web_search", {"query": "block-cancel"}, calls=3)
    job_id = pool.client.submit("three searches", tools="builtin").job_id
    wait_for(lambda: tavily.queries["block-cancel"] == 2, timeout=20, what="the second round's search")
    assert httpx.delete(f"{url}/jobs/{job_id}", timeout=10).status_code == 200
    tavily.release("block-cancel")
    done = record(pool, job_id)
    assert done["state"] == "cancelled"
    time.sleep(1)  # a run that went on would search a third time now
    assert tavily.queries["block-cancel"] == 2
    assert [h["round"] for h in (pool.store.get(job_id) or {})["history"] if h.get("event") == "tool"] == [1]


def test_a_worker_killed_between_rounds_is_resumed_without_repeating_them(
        stack: tuple[Pool, str, TavilyServer]) -> None:
    pool, _, tavily = stack
    script(pool, "web_search", {"query": "block"}, calls=2)
    job_id = pool.client.submit("two searches", tools="builtin", deadline=time.time() + 60).job_id
    wait_for(lambda: tavily.queries["block"] == 2, timeout=20, what="the second round's search")
    worker = str((pool.store.get(job_id) or {}).get("worker"))
    victim = next(w for w in pool.workers if w.name == f"worker {worker.split('@')[0]}")
    victim.kill()
    tavily.release("block")
    done = record(pool, job_id)
    assert done["state"] == "succeeded", done
    # From the start it would be 4 searches (1, 2 killed, 1 again, 2 again): resumed, round 1 is not repeated.
    assert tavily.queries["block"] == 3
    rounds = [h["round"] for h in done["history"] if h.get("event") == "tool"]
    assert rounds == [1, 2] and done["claims"] >= 2
