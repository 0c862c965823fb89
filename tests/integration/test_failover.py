"""The job path across processes: breakers, admission and failover with real Celery workers.

Four worker processes share one Redis; the mock LLM records what really reached it (requests,
peak in-flight), so every limit is checked where it matters: at the LLM.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from tests.pool import Pool, start_pool
from tests.processes import wait_for

MAX_FAILURES = 3
PRIMARY, BACKUP = deploy_id("primary"), deploy_id("backup")


@pytest.fixture
def pool_factory(tmp_path: Path) -> Iterator:
    started: list[Pool] = []
    with RedisServer(data_dir=tmp_path / "redis") as server:
        def make(containers: list[ContainerSpec], **settings: object) -> Pool:
            mock = MockLLM(containers=containers).start()
            try:
                pool = start_pool(tmp_path, server, mock, max_failures=MAX_FAILURES, **settings)
            except BaseException:
                mock.stop()
                raise
            started.append(pool)
            return pool

        try:
            yield make
        finally:
            for pool in started:
                pool.stop()
                pool.mock.stop()


def _states(pool: Pool, job_ids: list[str], timeout: float = 60) -> list[str]:
    return [r["state"] for r in pool.finished(job_ids, timeout=timeout)]


def _endpoints(pool: Pool, job_ids: list[str]) -> list[str]:
    return [r["result"]["endpoint"] for r in pool.finished(job_ids)]


def test_selected_endpoint_dies_under_load_no_job_fails(pool_factory) -> None:
    pool = pool_factory([ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.01),
                         ContainerSpec(name="backup", model_name="Llama-3.1-8B-Instruct", ttft=0.01)],
                        agent_breaker_open_wait=0.3, agent_breaker_open_wait_max=1)
    assert _states(pool, pool.submit(20)) == ["succeeded"] * 20
    pool.mock.set_fault("primary", "refuse")
    results = []
    for _ in range(30):  # steady load: 10 jobs every 0.1 s while the primary is dead
        results += pool.submit(10)
        time.sleep(0.1)
    states = _states(pool, results)
    assert states.count("succeeded") == len(results), {s: states.count(s) for s in set(states)}
    assert set(_endpoints(pool, results)) == {BACKUP}  # the primary refused every call
    stats = pool.admitter.stats([PRIMARY])[PRIMARY]
    trials = int(stats["trips"]) - 1  # each failed trial (a probe, llmpool.trial_probe) reopened it once more
    # Jobs' calls opened it: a refused connection at once, other failures (a pooled connection the
    # server dropped) by MAX_FAILURES at most; after that exactly one trial per open wait, never more,
    # and none of them a job's call.
    job_failures = sum(int(r.get("calls") or 0) - 1 for r in pool.finished(results))
    assert 1 <= job_failures <= MAX_FAILURES, stats
    assert stats["failures"] == job_failures + trials, stats
    assert trials >= 1
    pool.mock.set_fault("primary", "none")
    wait_for(lambda: pool.admitter.stats([PRIMARY])[PRIMARY]["state"] != "open", timeout=10,
             what="the open wait to pass")
    after = pool.submit(20)
    assert _states(pool, after) == ["succeeded"] * 20
    assert PRIMARY in _endpoints(pool, after)  # traffic came back after a good trial


def test_four_workers_racing_a_half_open_breaker_send_one_trial(pool_factory) -> None:
    pool = pool_factory([ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.8)],
                        agent_breaker_open_wait=0.5)
    pool.mock.set_fault("primary", "error500")
    _states(pool, pool.submit(MAX_FAILURES, deadline=time.time() + 3))  # open the breaker
    assert pool.admitter.stats([PRIMARY])[PRIMARY]["state"] == "open"
    pool.mock.set_fault("primary", "none")
    pool.mock.reset("primary")
    time.sleep(0.6)  # past the open wait: half-open
    results = pool.submit(32)  # 4 workers x 8 threads all try at once
    assert _states(pool, results) == ["succeeded"] * 32
    records = sorted(pool.mock.stats("primary")["records"], key=lambda r: r["time"])
    chat = [r for r in records if r["path"] == "/v1/chat/completions"]
    trial_end = chat[0]["time"] + chat[0]["duration"]
    assert sum(1 for r in chat if r["time"] < trial_end) == 1  # nothing else went in during the trial


def test_concurrency_cap_holds_at_the_llm_and_a_killed_workers_slots_come_back(pool_factory) -> None:
    cap = 3
    pool = pool_factory([ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.3)],
                        agent_endpoint_max_concurrency=cap, agent_lease_margin=1)
    assert _states(pool, pool.submit(40)) == ["succeeded"] * 40
    assert pool.mock.stats("primary")["peak_in_flight"] == cap
    pool.mock.set_fault("primary", "hang")
    pool.submit(cap)
    wait_for(lambda: pool.admitter.in_flight([PRIMARY])[PRIMARY] == cap, timeout=10, what="slots taken")
    for worker in pool.workers:
        worker.kill(signal.SIGKILL)  # every holder dies without settling
    # the lease is the call budget (request timeout 10 s) plus the margin: then the slots are free
    wait_for(lambda: pool.admitter.in_flight([PRIMARY])[PRIMARY] == 0, timeout=20, what="leases to expire")


def test_a_rate_limit_shared_by_four_workers_holds_at_the_llm(pool_factory) -> None:
    period, limit, burst = 2.0, 20, 2
    pool = pool_factory([ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.01)],
                        agent_endpoint_rpm=limit, agent_rate_period=period, agent_rate_burst=burst)
    started = time.time()
    results = pool.submit(110, deadline=time.time() + 60)
    assert _states(pool, results, timeout=60) == ["succeeded"] * 110
    times = sorted(r["time"] for r in pool.mock.stats("primary")["records"]
                   if r["path"] == "/v1/chat/completions" and r["time"] >= started)
    # GCRA admits by Redis time; the mock stamps arrival after an HTTP hop whose delay varies with
    # load. The bar is "within 5%": no window of 95% of a period sees more than limit + burst.
    span = period * 0.95
    worst = max(sum(1 for t in times if t0 <= t < t0 + span) for t0 in times)
    assert worst <= limit + burst, (worst, times)
    elapsed = times[-1] - times[0]
    expected = limit * elapsed / period + burst + 1
    assert abs(len(times) - expected) / expected <= 0.05, (len(times), expected, elapsed)


def test_a_400_fails_the_job_at_once_without_opening_the_breaker(pool_factory) -> None:
    pool = pool_factory([ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.01)])
    pool.mock.set_fault("primary", "error400")
    results = pool.submit(MAX_FAILURES + 2)
    assert _states(pool, results) == ["failed"] * (MAX_FAILURES + 2)
    record = pool.store.get(results[0])
    assert record is not None and record["error"]["type"] == "context_too_long"
    stats = pool.admitter.stats([PRIMARY])[PRIMARY]
    assert stats["state"] == "closed" and stats["failures"] == 0


def test_a_group_shares_load_and_a_thread_sticks_to_one_member(pool_factory) -> None:
    same = "Llama-3.1-70B-Instruct"
    pool = pool_factory([ContainerSpec(name="g1", model_name=same, ttft=0.2),
                         ContainerSpec(name="g2", model_name=same, ttft=0.2)])
    results = pool.submit(32)
    assert _states(pool, results) == ["succeeded"] * 32
    served = _endpoints(pool, results)
    assert min(served.count(deploy_id("g1")), served.count(deploy_id("g2"))) >= 8  # fewest in-flight wins
    sticky = pool.submit(12, thread_id="conversation-7")
    assert _states(pool, sticky) == ["succeeded"] * 12
    assert len(set(_endpoints(pool, sticky))) == 1  # one member's warm prefix cache
