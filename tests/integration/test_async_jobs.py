"""SSE and tools on /poll_requests, asynchronous jobs and their cancel, with real processes: Redis,
one worker, the mock LLM and the API under uvicorn.

One fleet for the module: one container. The pool's job lease is 3 s (renewed every second) and the
sweep looks every second, so "nobody runs a cancelled job again after its lease would have lapsed"
is seen within a few seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmpool.client import publish_chat
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer
from llmpool.errors import JobAlreadyFinished, JobNotFound
from llmpool.schemas import ChatJob
from tests.pool import Pool, pool_with_api
from tests.processes import wait_for

ANSWER = "one two three four five six seven eight nine ten"
LEASE = 3.0
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
SSE = {"Accept": "text/event-stream"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pool, str]]:
    tmp = tmp_path_factory.mktemp("async-jobs")
    with RedisServer(data_dir=tmp / "redis") as server:
        # 20 tokens/s: each token is its own stream entry (the worker writes every 50 ms)
        mock = MockLLM(containers=[ContainerSpec(name="llm", ttft=0.01, tokens_per_second=20,
                                                 reply=ANSWER)]).start()
        with pool_with_api(tmp, server, mock, workers=1, threads=8, agent_job_lease=LEASE,
                           agent_sweep_interval=1, agent_endpoint_max_concurrency=1,
                           agent_first_token_timeout=20, agent_request_timeout=30) as running:
            yield running


@pytest.fixture(autouse=True)
def calm_mock(api: tuple[Pool, str]) -> Iterator[None]:
    pool, _ = api
    pool.mock.configure("llm", fault="none", reply=ANSWER)
    pool.mock.reset("llm")
    yield
    pool.mock.configure("llm", fault="none", reply=ANSWER)


def _parse(lines: Iterator[str], limit: int | None = None) -> list[dict[str, Any]]:
    """SSE events (`event`, `id`, parsed `data`) from a response's lines; stops after `limit` events."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if not line:
            if current:
                events.append(current)
                current = {}
                if limit is not None and len(events) >= limit:
                    break
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        current[name] = json.loads(value) if name == "data" else value
    return events


Events = list[dict[str, Any]]


def _sse(method: str, url: str, *, limit: int | None = None, **kwargs: Any) -> tuple[httpx.Response, Events]:
    with httpx.stream(method, url, timeout=30, **kwargs) as response:
        if response.status_code != 200:
            response.read()
            return response, []
        return response, _parse(response.iter_lines(), limit)


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"]["text"] for e in events if e["event"] == "token")


def _ids(events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [tuple(int(p) for p in e["id"].split("-")) for e in events if "id" in e]  # type: ignore[misc]


def test_sse_events_have_ids_and_a_reconnect_gets_only_what_came_after(api: tuple[Pool, str]) -> None:
    _pool, url = api
    headers = {**SSE, "Idempotency-Key": "sse-resume-1"}
    response, first = _sse("POST", url + "/poll_requests", limit=3, headers=headers, json={"message": "hi"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    job_id = response.headers["x-job-id"]
    assert [e["event"] for e in first] == ["token"] * 3  # then the client hangs up
    # The same POST again, with the last id it had: the rest, nothing twice, nothing submitted anew
    resumed_headers = {**headers, "Last-Event-ID": first[-1]["id"]}
    response, rest = _sse("POST", url + "/poll_requests", headers=resumed_headers, json={"message": "hi"})
    assert response.headers["x-job-id"] == job_id
    assert rest[-1]["event"] == "done" and rest[-1]["data"]["job_id"] == job_id
    assert _text(first) + _text(rest) == ANSWER
    ids = _ids(first + rest)
    assert len(ids) == len(first + rest) and ids == sorted(set(ids))  # every event has an id, increasing
    # By the job's id (X-Job-Id) and on GET /jobs/{id}/events: the same tail after the same event
    by_id = {**SSE, "X-Job-Id": job_id, "Last-Event-ID": first[-1]["id"]}
    _, again = _sse("POST", url + "/poll_requests", headers=by_id, json={"message": "hi"})
    _, events = _sse("GET", f"{url}/jobs/{job_id}/events", headers={"Last-Event-ID": first[-1]["id"]})
    assert again == rest and events == rest
    _, everything = _sse("GET", f"{url}/jobs/{job_id}/events")
    assert everything[:3] == first and everything[3:] == rest
    _, nothing = _sse("GET", f"{url}/jobs/{job_id}/events", headers={"Last-Event-ID": rest[-1]["id"]})
    assert nothing == []
    unknown = httpx.post(url + "/poll_requests", headers={**SSE, "X-Job-Id": "no-such-job"},
                         json={"message": "hi"}, timeout=10)
    assert unknown.status_code == 404


def test_tools_round_trip_on_poll_requests(api: tuple[Pool, str]) -> None:
    pool, url = api
    body = {"message": "use a tool for the weather", "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    answer = httpx.post(url + "/poll_requests", json=body, headers={"Accept": "application/json"}, timeout=30)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["finish_reason"] == "tool_calls"
    call = data["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"request": "use a tool for the weather"}
    sent = pool.mock.stats("llm")["last_body"]
    assert sent["tools"] == TOOLS and sent["tool_choice"] == body["tool_choice"]
    text = httpx.post(url + "/poll_requests", json=body, timeout=30).text
    tool_line = next(line for line in text.splitlines() if line.startswith("[TOOL_CALLS]"))
    assert json.loads(tool_line.removeprefix("[TOOL_CALLS]")) == data["tool_calls"]
    assert text.index("[TOOL_CALLS]") < text.index("[STATS]")
    _, events = _sse("POST", url + "/poll_requests", headers=SSE, json=body)
    assert [e["event"] for e in events][-2:] == ["tool_calls", "done"]
    assert events[-2]["data"]["tool_calls"] == data["tool_calls"]
    bad = httpx.post(url + "/poll_requests", json={"message": "x", "tools": [{"type": "function"}]}, timeout=10)
    assert bad.status_code == 422 and "tools" in bad.text


def test_post_jobs_answers_202_and_its_events_stream(api: tuple[Pool, str]) -> None:
    _pool, url = api
    response = httpx.post(url + "/jobs", json={"message": "later"}, timeout=10)
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/jobs/{job_id}" == response.json()["url"]
    _, events = _sse("GET", f"{url}/jobs/{job_id}/events")
    assert events[-1]["event"] == "done" and _text(events) == ANSWER
    assert httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()["state"] == "succeeded"
    finished = httpx.delete(f"{url}/jobs/{job_id}", timeout=10)
    assert finished.status_code == 409 and finished.json()["error"]["type"] == "job_finished"
    assert httpx.delete(f"{url}/jobs/no-such-job", timeout=10).status_code == 404
    assert httpx.get(f"{url}/jobs/no-such-job/events", timeout=10).status_code == 404


def test_a_cancelled_queued_job_never_runs(api: tuple[Pool, str]) -> None:
    pool, url = api
    job = ChatJob.model_validate({"messages": [{"role": "user", "content": "never"}], "stream": True})
    payload = job.model_dump(mode="json", exclude_none=True)
    assert pool.store.create("queued-1", queue="chat.default", deadline=time.time() + 60, summary="t",
                             payload=payload)
    cancelled = httpx.delete(f"{url}/jobs/queued-1", timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["was"] == "queued"
    publish_chat(pool.app, "queued-1", "chat.default", payload)  # its message reaches a worker after the cancel
    time.sleep(2 * LEASE)  # the worker takes the message, and the sweep looks more than once
    record = pool.store.get("queued-1") or {}
    assert record["state"] == "cancelled" and record.get("claims", 0) == 0
    assert pool.mock.stats("llm")["chat_requests"] == 0
    _, events = _sse("GET", f"{url}/jobs/queued-1/events")
    assert [e["event"] for e in events] == ["error"] and events[0]["data"]["state"] == "cancelled"


def test_cancel_a_parked_and_a_running_job(api: tuple[Pool, str]) -> None:
    """The running call is cut within a second, its slot and claim released, nothing charged; the
    parked one never runs; no worker runs either again after their leases would have lapsed."""
    pool, url = api
    endpoint = pool.registry.selection().current.id  # type: ignore[union-attr]
    pool.mock.configure("llm", fault="hang")  # accepts, never answers, until the client leaves
    running = httpx.post(url + "/jobs", json={"message": "slow"}, timeout=10).json()["job_id"]
    wait_for(lambda: pool.mock.stats("llm")["in_flight"] == 1, timeout=10, what="the call to reach the mock")
    parked = httpx.post(url + "/jobs", json={"message": "waits"}, timeout=10).json()["job_id"]
    # max_concurrency 1: the second job is refused and waits in Redis
    wait_for(lambda: (pool.store.get(parked) or {}).get("state") == "waiting", timeout=10, what="a parked job")
    response = httpx.delete(f"{url}/jobs/{parked}", timeout=10)
    assert response.status_code == 200 and response.json()["was"] == "waiting"
    response = httpx.delete(f"{url}/jobs/{running}", timeout=10)
    cancelled_at = time.monotonic()
    assert response.status_code == 200 and response.json()["was"] == "running"
    wait_for(lambda: pool.mock.stats("llm")["in_flight"] == 0, timeout=3, what="the mock to see the client leave")
    left_after = time.monotonic() - cancelled_at
    print(f"the mock saw the cancelled call leave {left_after:.2f}s after DELETE")
    assert left_after < 1.5
    wait_for(lambda: pool.admitter.in_flight([endpoint])[endpoint] == 0, timeout=3, what="the slot to come back")
    time.sleep(LEASE + 2)  # past the lease the cancelled run would have held: the sweep has looked
    for job_id in (running, parked):
        record = pool.store.get(job_id) or {}
        assert record["state"] == "cancelled" and record["error"]["type"] == "cancelled"
    assert (pool.store.get(running) or {})["claims"] == 1
    assert pool.mock.stats("llm")["chat_requests"] == 1  # the parked job never ran, the running one ran once
    breaker = pool.admitter.stats([endpoint])[endpoint]
    assert breaker["failures"] == 0 and breaker["state"] == "closed"  # an abandoned call is nobody's failure
    assert pool.admitter.in_flight([endpoint])[endpoint] == 0
    _, events = _sse("GET", f"{url}/jobs/{running}/events")
    assert events[-1]["event"] == "error" and events[-1]["data"]["error"]["type"] == "cancelled"


def test_client_cancel(api: tuple[Pool, str]) -> None:
    pool, _url = api
    pool.mock.configure("llm", fault="hang")
    job_id = pool.client.submit("slow", stream=True).job_id
    wait_for(lambda: pool.mock.stats("llm")["in_flight"] == 1, timeout=10, what="the call to reach the mock")
    assert pool.client.cancel(job_id) == "running"
    events = list(pool.client.stream(job_id, timeout=10))
    assert events[-1].type == "end" and events[-1].state == "cancelled"
    wait_for(lambda: pool.mock.stats("llm")["in_flight"] == 0, timeout=3, what="the call to be abandoned")
    with pytest.raises(JobAlreadyFinished):
        pool.client.cancel(job_id)
    with pytest.raises(JobNotFound):
        pool.client.cancel("no-such-job")
