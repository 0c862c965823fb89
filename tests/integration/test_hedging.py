"""Hedged calls through a real worker: a hung endpoint's job is answered by the next one.

One worker process, the mock LLM with two containers: the selected one (70B) hangs (it reads the
request and never answers), the next one (8B) is healthy. The job's call to the 70B is hedged after
the hedge delay; the 8B's answer is the job's only answer, and the hung call is cancelled at once:
the mock sees its client leave, and admission charges the 70B nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from llmpool.client import Client
from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from tests.pool import Pool, start_pool
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(90)

BIG, SMALL = deploy_id("big"), deploy_id("small")
FIRST_TOKEN_TIMEOUT = 10.0
HEDGE_DELAY = 0.5  # = AGENT_HEDGE_MIN_DELAY = FIRST_TOKEN_TIMEOUT / 20: the delay of an endpoint with no history


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Pool]:
    containers = [ContainerSpec(name="big", model_name="Llama-3.1-70B-Instruct", ttft=0.02),
                  ContainerSpec(name="small", model_name="Llama-3.1-8B-Instruct", ttft=0.02)]
    flushed = redis.Redis.from_url(redis_server.url)
    flushed.flushall()  # the session's Redis: no breaker or TTFT history from earlier tests
    flushed.close()
    with MockLLM(containers=containers) as mock:
        started = start_pool(tmp_path_factory.mktemp("hedging"), redis_server, mock, workers=1, threads=4,
                             agent_first_token_timeout=FIRST_TOKEN_TIMEOUT, agent_request_timeout=30,
                             agent_hedge_min_delay=HEDGE_DELAY)
        try:
            yield started
        finally:
            started.stop()


@pytest.fixture(autouse=True)
def healthy_again(pool: Pool) -> Iterator[None]:
    yield
    for name in ("big", "small"):
        pool.mock.configure(name, fault="none", ttft=0.02)
    wait_for(lambda: pool.mock.stats("big")["in_flight"] == 0, timeout=10, what="no call left on big")


def _answer(client: Client, job_id: str) -> tuple[list[str], float]:
    """The job's stream as event types (tokens joined) and when its first token came, after submit."""
    started, first_token, kinds = time.monotonic(), None, []
    for event in client.stream(job_id, timeout=60):
        if event.type == "token" and first_token is None:
            first_token = time.monotonic() - started
        kinds.append(event.type)
    assert first_token is not None, kinds
    return kinds, first_token


def test_a_hung_endpoints_job_is_answered_by_the_hedge_and_the_hung_call_is_cancelled(pool: Pool) -> None:
    pool.mock.set_fault("big", "hang")
    job_id = pool.client.submit("hello", stream=True).job_id
    kinds, first_token = _answer(pool.client, job_id)
    # The hung call is gone from the mock right after the answer: its socket was shut down.
    wait_for(lambda: pool.mock.stats("big")["in_flight"] == 0, timeout=2, what="the hung call to end")
    result = pool.client.result(job_id, timeout=5)
    assert result.endpoint == SMALL
    assert first_token < HEDGE_DELAY + 3 < FIRST_TOKEN_TIMEOUT  # the hedge delay, not the timeout
    assert "reset" not in kinds and kinds.count("end") == 1
    text = "".join(e.text for e in pool.client.stream(job_id, timeout=5) if e.type == "token")
    assert text == result.content  # one answer, the 8B's, and nothing of the 70B's
    assert pool.mock.stats("big")["by_status"].get("499") == 1  # the client left it, once
    hedge = [h for h in (pool.client.record(job_id) or {})["history"] if h.get("event") == "hedge"]
    assert [(h["state"], h["endpoint"], h["won"]) for h in hedge] == [("sent", SMALL, True)]
    stats = pool.admitter.stats([BIG, SMALL])
    assert stats[BIG]["failures"] == 0 and stats[BIG]["in_flight"] == 0  # settled neutral, lease back
    assert stats[SMALL]["in_flight"] == 0


def test_the_first_endpoint_answering_first_cancels_the_hedge(pool: Pool) -> None:
    pool.mock.reset("small")
    pool.mock.configure("big", ttft=1.5)  # slower than the hedge delay, faster than the hedge
    pool.mock.configure("small", ttft=20)
    job_id = pool.client.submit("hello", stream=True).job_id
    kinds, _ = _answer(pool.client, job_id)
    wait_for(lambda: pool.mock.stats("small")["in_flight"] == 0, timeout=2, what="the hedge to be cancelled")
    assert pool.client.result(job_id, timeout=5).endpoint == BIG
    assert "reset" not in kinds and kinds.count("end") == 1
    assert pool.mock.stats("small")["chat_requests"] == 1  # the hedge was sent, then cut
    hedge = [h for h in (pool.client.record(job_id) or {})["history"] if h.get("event") == "hedge"]
    assert [(h["state"], h["won"]) for h in hedge] == [("sent", False)]
    assert pool.admitter.stats([SMALL])[SMALL]["failures"] == 0
