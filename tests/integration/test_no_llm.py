"""With no LLM at all the pool stays up, jobs wait, and they complete once a container appears."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer
from llmpool.runner import wait_delay
from tests.processes import ManagedProcess, clean_env, start_api, start_beat, start_worker, wait_for

# A job with no LLM waits in Redis (wait_delay's backoff) and fails with no_llm_available once its
# next wait would pass its deadline, or when it comes back from a wait after it (chat_task._late).
# Its first run must begin before the deadline, though: a job a worker takes after its deadline
# never waited for an LLM, it waited for a worker, and is `expired` (504), as the README says.
# A deadline shorter than the first wait (0.37 s) was missed by the worker's pick-up about one run
# in three on a loaded machine; this one (the first three waits at their shortest, 2.6 s) gives the
# pick-up seconds, and the job still ends by its deadline, after two or three waits.
NO_LLM_DEADLINE = wait_delay(0, 0.0) + wait_delay(1, 0.0) + wait_delay(2, 0.0)


@dataclass
class Stack:
    api: str
    mock: MockLLM


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("no-llm")
    with RedisServer(data_dir=tmp / "redis") as server, MockLLM(containers=[]) as mock:
        env = clean_env(
            redis_url=server.url, agent_backend_url=mock.backend_url, agent_fallback_to_local="false",
            agent_discovery_interval=30, agent_llm_polling_interval=0.5, agent_discovery_cache_ttl=0.2,
            agent_health_check_interval=0.5, agent_health_check_timeout=1,
        )
        procs: list[ManagedProcess] = []
        try:
            procs.append(start_worker(tmp, env, concurrency=4))
            procs.append(start_beat(tmp, env))
            api_proc, url = start_api(tmp, env)
            procs.append(api_proc)
            yield Stack(api=url, mock=mock)
        finally:
            for proc in reversed(procs):
                proc.stop()


def test_status_says_initializing_in_the_tt_studio_shape(stack: Stack) -> None:
    root = httpx.get(stack.api + "/", timeout=5)
    assert root.status_code == 200
    assert root.json() == {"message": "Agent server is running but waiting for LLM", "status": "initializing",
                           "llm_mode": "none", "llm_info": "No LLM available yet", "health_monitoring": "N/A",
                           "discovery_summary": "N/A", "next_poll": "Will retry every 0.5 seconds"}
    status = httpx.get(stack.api + "/status", timeout=5).json()
    assert status["status"] == "initializing" and status["current_llm"] is None
    assert status["workers"] == 1
    assert httpx.get(stack.api + "/test_llm", timeout=5).status_code == 503


def test_a_job_past_its_deadline_without_an_llm_fails_clearly(stack: Stack) -> None:
    started = time.monotonic()
    resp = httpx.post(stack.api + "/poll_requests", json={"message": "anyone?", "timeout": NO_LLM_DEADLINE},
                      headers={"Accept": "application/json"}, timeout=30)
    assert resp.status_code == 503
    assert resp.json()["error"] == {"type": "no_llm_available",
                                    "message": "No LLM available before the job's deadline"}
    assert time.monotonic() - started < 10


def test_a_streaming_client_gets_the_tt_studio_waiting_line_then_the_outcome(stack: Stack) -> None:
    with httpx.stream("POST", stack.api + "/poll_requests", json={"message": "hello?", "timeout": NO_LLM_DEADLINE},
                      timeout=30) as resp:
        assert resp.status_code == 200
        text = "".join(resp.iter_text())
    waiting, outcome = text.split("\n\n", 1)
    assert waiting == ('data: {"status": "waiting", "message": "Agent is still initializing, '
                       'waiting for LLM to become available..."}')
    assert outcome.startswith("\n[ERROR]") and '"no_llm_available"' in outcome


# Last in this module on purpose: it adds the LLM that every test above must not see.
def test_a_waiting_job_completes_once_a_container_appears(stack: Stack) -> None:
    answers: list[httpx.Response] = []

    def ask() -> None:
        answers.append(httpx.post(stack.api + "/poll_requests", json={"message": "are you there?"},
                                  headers={"Accept": "application/json", "Idempotency-Key": "wait-1"},
                                  timeout=60))

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        wait_for(lambda: _job_state(stack, "wait-1") == "waiting", timeout=10, what="the job to wait")
        time.sleep(1.5)  # it keeps waiting, re-queued with backoff, no thread held
        assert _job_state(stack, "wait-1") in ("waiting", "queued")
        stack.mock.add_container(ContainerSpec(name="late-llm", model_name="Llama-3.1-8B-Instruct", ttft=0.01))
    finally:
        asker.join(60)
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
    assert answers[0].json()["answer"] == "Hello from late-llm! You said: are you there?"
    record = httpx.get(stack.api + "/jobs/wait-1", timeout=5).json()
    assert record["state"] == "succeeded" and record["attempts"] == 1  # waiting is not a failed attempt


def _job_state(stack: Stack, job_id: str) -> str | None:
    resp = httpx.get(f"{stack.api}/jobs/{job_id}", timeout=5)
    return resp.json().get("state") if resp.status_code == 200 else None

