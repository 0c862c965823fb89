"""AGENT_WORKER_POOL=gevent: real gevent workers hold hundreds of calls at once, renew their leases,
cut cancelled calls, and a SIGKILLed one loses no job (bench/inflight.py takes it to 10,000)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import FAST_RECOVERY, Chaos, open_chaos
from tests.processes import wait_for

LEASE = 3  # seconds: every call outlives a few leases, so only renewal keeps its job
LLM_SECONDS = 8.0
IN_FLIGHT = 300  # jobs, one gevent worker, all calls open at once

pytestmark = pytest.mark.integration


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    pytest.importorskip("gevent")
    settings = {**FAST_RECOVERY, "agent_job_lease": LEASE, "agent_worker_pool": "gevent"}
    with open_chaos(tmp_path, llm_seconds=LLM_SECONDS, **settings) as rig:
        yield rig


def _in_flight(rig: Chaos) -> int:
    return int(rig.mock.stats("llm")["in_flight"])


@pytest.mark.timeout(90)
def test_hundreds_in_flight_with_leases_renewed_and_a_cancel(chaos: Chaos) -> None:
    chaos.worker("g1", pool="gevent", concurrency=IN_FLIGHT + 10, agent_worker_concurrency=IN_FLIGHT + 10)
    chaos.submit(IN_FLIGHT)
    # Every call open at the mock at once: the gevent pool really runs them side by side.
    wait_for(lambda: _in_flight(chaos) == IN_FLIGHT, timeout=30, what=f"{IN_FLIGHT} calls in flight")
    doomed = chaos.submit(1)[0]
    wait_for(lambda: _in_flight(chaos) == IN_FLIGHT + 1, timeout=10, what="the cancelled job's call open")
    assert chaos.client.cancel(doomed) == "running"
    # The lease greenlet saw the cancel and cut the call at the mock (it would otherwise run LLM_SECONDS).
    wait_for(lambda: _in_flight(chaos) <= IN_FLIGHT, timeout=5, what="the cancelled call cut")
    chaos.wait_finished(timeout=60)
    ledger = chaos.ledger()
    assert (len(ledger.answered), ledger.failed, ledger.unfinished, ledger.double_ends) == \
        (IN_FLIGHT, {doomed: "cancelled"}, [], []), ledger.summary()
    assert (chaos.store.get(doomed) or {}).get("state") == "cancelled"
    # Each call outlived its claim lease more than twice; the renewals kept every job on its worker.
    assert ledger.recovered() == []
    stats = chaos.mock.stats("llm")
    assert (stats["peak_in_flight"], stats["chat_requests"]) == (IN_FLIGHT + 1, IN_FLIGHT + 1)


@pytest.mark.timeout(90)
def test_sigkill_of_a_gevent_worker_mid_call(chaos: Chaos) -> None:
    doomed = chaos.worker("doomed", pool="gevent", concurrency=100, agent_worker_concurrency=100)
    chaos.submit(60)
    wait_for(lambda: _in_flight(chaos) == 60, timeout=20, what="60 calls in flight")
    doomed.kill(signal.SIGKILL)
    chaos.worker("survivor", pool="gevent", concurrency=100, agent_worker_concurrency=100)
    chaos.wait_finished(timeout=60)
    ledger = chaos.ledger()
    assert (len(ledger.answered), ledger.failed, ledger.unfinished, ledger.double_ends) == (60, {}, [], []), \
        ledger.summary()
    assert sorted(ledger.recovered()) == sorted(chaos.submitted)  # every job was on the killed worker
    # one call cut by the kill, one that answered
    assert chaos.mock.stats("llm")["chat_requests"] == 120
