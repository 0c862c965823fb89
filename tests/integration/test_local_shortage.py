"""A shortage of our own (no free connection in our HTTP pool) is never charged to an endpoint.

Health probes and discovery have their own client: a chat pool with every connection busy leaves
them untouched, and a probe pool with none free leaves the endpoint's health as it was. A chat
call that finds no free connection charges the endpoint's breaker nothing and costs the job no
call: the job waits and runs again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from beat.tasks import run_discovery, run_health_pass
from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from llmpool.resources import Resources, _build, chat_connections
from llmpool.settings import load_settings
from tests.pool import start_pool
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(90)

C1 = deploy_id("c1")


@pytest.fixture(scope="module")
def mock() -> Iterator[MockLLM]:
    with MockLLM(containers=[ContainerSpec(name="c1")]) as running:
        yield running


@pytest.fixture
def holder() -> Iterator[MockLLM]:
    """A container nobody discovers, whose chat hangs: each request to it holds a connection."""
    with MockLLM([ContainerSpec(name="holder", fault="hang")], backend=False) as running:
        yield running


def resources(redis_url: str, mock: MockLLM, **overrides: object) -> Resources:
    settings = load_settings(redis_url=redis_url, agent_backend_url=mock.backend_url,
                             agent_fallback_to_local=False, agent_health_check_timeout=1, **overrides)
    return _build(settings)


def hold_connections(http: httpx.Client, holder: MockLLM, n: int) -> list[threading.Thread]:
    """Take `n` connections of `http` until the holder stops (its hangs then answer 504)."""
    url = holder.url("holder") + "/v1/chat/completions"

    def hold() -> None:
        try:
            http.post(url, json={"messages": [{"role": "user", "content": "hold"}]}, timeout=30)
        except httpx.HTTPError:
            pass

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    wait_for(lambda: holder.stats("holder")["in_flight"] == n, timeout=10, what=f"{n} held connections")
    return threads


def test_a_saturated_chat_pool_does_not_touch_health_probes(redis_url: str, mock: MockLLM,
                                                            holder: MockLLM) -> None:
    res = resources(redis_url, mock, agent_worker_concurrency=1)
    try:
        run_discovery(res, force=True)
        before = res.registry.snapshot().health[C1]
        hold_connections(res.http, holder, chat_connections(res.settings))  # every one of the chat pool
        with pytest.raises(httpx.PoolTimeout):  # the chat pool really is full
            res.http.get(mock.url("c1") + "/health", timeout=httpx.Timeout(1, pool=0.2))
        result = run_health_pass(res)
        after = res.registry.snapshot().health[C1]
    finally:
        holder.stop()
        res.close()
    assert result["states"] == {C1: "healthy"}
    assert after.state == "healthy" and after.consecutive_failures == 0
    assert after.last_check is not None and before.last_check is not None and after.last_check > before.last_check


def test_a_probe_that_finds_no_free_connection_leaves_health_as_it_was(redis_url: str, mock: MockLLM,
                                                                       holder: MockLLM) -> None:
    res = resources(redis_url, mock, agent_probe_connections=1, agent_max_failures=1)
    try:
        run_discovery(res, force=True)
        before = res.registry.snapshot().health[C1]
        hold_connections(res.probe_http, holder, 1)  # as a probe stuck from an earlier pass would
        result = run_health_pass(res)
        after = res.registry.snapshot().health[C1]
    finally:
        holder.stop()
        res.close()
    assert result["probed"] == 0  # not "timed out": with AGENT_MAX_FAILURES=1 that would be unhealthy
    assert after == before and after.state == "healthy"


def test_chat_calls_that_find_no_free_connection_charge_no_breaker_and_run_later(tmp_path: Path) -> None:
    """A worker run with more threads (-c) than its chat pool has connections (sized from
    AGENT_WORKER_CONCURRENCY), as a worker started by hand with a bigger -c is: two of the
    3-second calls find the pool full."""
    slow = ContainerSpec(name="llm", ttft=3.0, tokens_per_second=0)
    endpoint = deploy_id("llm")
    connections = chat_connections(load_settings(agent_worker_concurrency=10))
    jobs = connections + 2
    with RedisServer(data_dir=tmp_path / "redis") as server, MockLLM([slow]) as llm:
        pool = start_pool(tmp_path, server, llm, workers=1, threads=jobs, max_failures=1,
                          agent_worker_concurrency=10, agent_connect_timeout=1)
        try:
            records = pool.finished(pool.submit(jobs), timeout=60)
            peak = llm.stats("llm")["peak_in_flight"]
            breaker = pool.admitter.stats([endpoint])[endpoint]
            in_flight = pool.admitter.in_flight([endpoint])[endpoint]
        finally:
            pool.stop()
    assert [r["state"] for r in records] == ["succeeded"] * jobs
    short = [r for r in records if any(e["event"] == "refused" and e.get("reason") == "no_free_connection"
                                       for e in r["history"])]
    assert short, "no call found the pool full: the test proved nothing"
    assert all(r["calls"] == 1 for r in records)  # the shortage cost no job a call
    assert peak <= connections
    # With AGENT_MAX_FAILURES=1 one charged failure would have opened the breaker.
    assert (breaker["state"], breaker["failures"], in_flight) == ("closed", 0, 0), breaker
