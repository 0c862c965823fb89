"""An outage costs the jobs at most AGENT_MAX_FAILURES failed calls in all and loses none (issue 12).

Two worker processes on a real Redis and the mock LLM's 70B (selected) and 8B under steady load;
the 70B refuses connections for a while, comes back, then hangs for a while and comes back. A job's
record counts its calls over all its runs: all but the one that answered got no answer (a hedge's
loser included). Half-open trials are probes (llmpool.trial_probe), so they cost no job a call; a
refused connection opens the breaker at once; a hung endpoint is "overdue" for new calls once a
call has waited past its p99 TTFT. Counts, not timings.
"""

from __future__ import annotations

import time

from llmpool.dev.mock_llm import ContainerSpec
from tests.integration.test_failover import BACKUP, MAX_FAILURES, PRIMARY, pool_factory  # noqa: F401 - a fixture
from tests.pool import Pool
from tests.processes import wait_for

RATE = 10  # jobs a second
FAULT_FOR = 3.0  # seconds each fault lasts


def _steady_load(pool: Pool, seconds: float) -> list[str]:
    jobs: list[str] = []
    started = time.time()
    while time.time() - started < seconds:
        jobs += pool.submit(1)
        time.sleep(max(0.0, len(jobs) / RATE - (time.time() - started)))
    return jobs


def _outage(pool: Pool, fault: str) -> tuple[int, list[str]]:
    """Play `fault` on the 70B under load, and load on after it ends; the jobs' failed calls and endpoints."""
    pool.mock.set_fault("primary", fault, seconds=FAULT_FOR)
    jobs = _steady_load(pool, FAULT_FOR + 2)
    records = pool.finished(jobs, timeout=90)
    states = [r.get("state") for r in records]
    assert states == ["succeeded"] * len(jobs), {s: states.count(s) for s in set(states)}  # none lost
    return sum(int(r["calls"]) - 1 for r in records), [r["result"]["endpoint"] for r in records]


def test_an_outage_costs_the_jobs_at_most_max_failures_calls(pool_factory) -> None:  # noqa: F811
    pool = pool_factory([ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.05),
                         ContainerSpec(name="backup", model_name="Llama-3.1-8B-Instruct", ttft=0.05)],
                        workers=2, threads=8, agent_breaker_open_wait=0.5, agent_breaker_open_wait_max=2)
    warm = pool.finished(pool.submit(30))  # the 70B's TTFTs warm (AGENT_TTFT_MIN_SAMPLES 20)
    assert {r["result"]["endpoint"] for r in warm} == {PRIMARY}
    for fault in ("refuse", "hang"):
        failed, served = _outage(pool, fault)
        assert BACKUP in served, fault  # the fault hit: jobs moved to the 8B
        assert 1 <= failed <= MAX_FAILURES, (fault, failed)
        wait_for(lambda: pool.admitter.stats([PRIMARY])[PRIMARY]["state"] == "closed", timeout=30,
                 what=f"a probe to close the 70B's breaker after the {fault}")
        back = pool.finished(pool.submit(5))
        assert PRIMARY in {r["result"]["endpoint"] for r in back}, fault  # traffic came back
