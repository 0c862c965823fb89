"""Workers die (SIGKILL) or stop (SIGTERM) with jobs running or waiting: every job ends exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from llmpool.client import Client
from llmpool.dev.redis_server import free_port
from llmpool.errors import SubmitFailed
from llmpool.keys import Keys
from llmpool.locks import LOCK_TTL
from llmpool.metrics import MetricsStore
from tests.chaos.harness import FAST_RECOVERY, Chaos, open_chaos
from tests.processes import wait_for

LEASE = 3  # seconds: a dead worker's jobs are handed back within this plus a sweep
LLM_SECONDS = 2.0
RECOVERY_BOUND = 60  # the figure: answered within 60 s of the kill plus the LLM's latency


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    with open_chaos(tmp_path, llm_seconds=LLM_SECONDS, **{**FAST_RECOVERY, "agent_job_lease": LEASE}) as rig:
        yield rig


def _running(rig: Chaos, worker: object, n: int) -> None:
    wait_for(lambda: rig.running_on(worker) >= n, timeout=20, what=f"{n} jobs running on the worker")  # type: ignore[arg-type]


@pytest.mark.timeout(150)
def test_sigkill_of_a_worker_running_jobs(chaos: Chaos) -> None:
    doomed = chaos.worker("doomed", concurrency=8)
    chaos.submit(8)
    _running(chaos, doomed, 8)
    chaos.worker("survivor", concurrency=8)
    killed_at = time.monotonic()
    doomed.kill(signal.SIGKILL)
    chaos.wait_finished(timeout=RECOVERY_BOUND + LLM_SECONDS)
    slowest = time.monotonic() - killed_at
    ledger = chaos.ledger()
    assert (len(ledger.answered), ledger.failed, ledger.unfinished, ledger.double_ends) == (8, {}, [], []), \
        ledger.summary()
    assert sorted(ledger.recovered()) == sorted(chaos.submitted)  # all eight were on the killed worker
    # each recovered job cost two LLM calls: the one the kill cut, and the one that answered
    assert chaos.mock.stats("llm")["chat_requests"] == 16
    # the killed worker's endpoint slots came back within a lease, not after its longest call
    wait_for(lambda: chaos.redis.zcard(Keys().leases("local")) == 0, timeout=LEASE + 2, what="slots back")
    # /metrics agrees with the records: each hand-back counted by the sweep, each job once (by its last run)
    counted = {s.family.name: s.values for s in MetricsStore(chaos.redis, Keys()).read()}
    # (a recovered job briefly refused by admission waits parked, and its `due` hand-back counts too)
    handed_back = Counter((e["event"], "chat.default") for h in ledger.histories.values() for e in h
                          if e.get("event") in ("lease_lapsed", "due"))
    assert handed_back[("lease_lapsed", "chat.default")] >= 8  # each of the killed worker's jobs
    assert counted["llmpool_sweep_recoveries_total"] == handed_back
    assert sum(counted["llmpool_jobs_total"].values()) == 8
    print(f"\n[chaos] worker SIGKILL: 8 submitted, {ledger.summary()}, slowest recovery {slowest:.1f}s")


@pytest.mark.timeout(150)
def test_sigkill_of_a_worker_whose_jobs_wait(chaos: Chaos) -> None:
    """With room for 2 calls at a time, most jobs wait parked in Redis; the worker's death loses none."""
    doomed = chaos.worker("doomed", concurrency=8, agent_endpoint_max_concurrency=2)
    chaos.submit(10)
    wait_for(lambda: chaos.store.counts()["parked"] >= 4, timeout=20, what="jobs parked")
    doomed.kill(signal.SIGKILL)
    chaos.worker("survivor", concurrency=8, agent_endpoint_max_concurrency=2)
    chaos.wait_finished(timeout=RECOVERY_BOUND + 10 * LLM_SECONDS)
    ledger = chaos.ledger()
    assert (len(ledger.answered), ledger.failed, ledger.unfinished, ledger.double_ends) == (10, {}, [], []), \
        ledger.summary()
    parked = [j for j, h in ledger.histories.items() if any(e.get("event") == "parked" for e in h)]
    assert len(parked) >= 4
    print(f"\n[chaos] worker SIGKILL with waiting jobs: 10 submitted, {ledger.summary()}, parked={len(parked)}")


@pytest.mark.timeout(120)
def test_a_job_slower_than_its_lease_runs_once(chaos: Chaos) -> None:
    chaos.mock.configure("llm", ttft=LEASE * 3)
    chaos.worker("w1", concurrency=4)
    chaos.worker("w2", concurrency=4)
    chaos.submit(1)
    chaos.wait_finished(timeout=60)
    ledger = chaos.ledger()
    assert (len(ledger.answered), ledger.recovered(), ledger.double_ends) == (1, [], []), ledger.summary()
    [history] = ledger.histories.values()
    assert [e["event"] for e in history] == ["claimed", "succeeded"]
    assert chaos.mock.stats("llm")["chat_requests"] == 1


@pytest.mark.timeout(120)
def test_sigterm_lets_running_jobs_finish(chaos: Chaos) -> None:
    leaving = chaos.worker("leaving", concurrency=8)
    chaos.submit(6)
    _running(chaos, leaving, 6)
    leaving.kill(signal.SIGTERM)
    assert leaving.proc is not None
    leaving.proc.wait(timeout=30)
    chaos.wait_finished(timeout=5)
    ledger = chaos.ledger()
    assert (len(ledger.answered), ledger.recovered(), ledger.double_ends) == (6, [], []), ledger.summary()
    assert chaos.mock.stats("llm")["chat_requests"] == 6


def test_a_failed_publish_leaves_no_half_submitted_job(chaos: Chaos) -> None:
    broken = Client(chaos.server.url)  # the job store answers, the broker does not
    broken.celery.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    broken.celery.conf.task_publish_retry = False
    with pytest.raises(SubmitFailed):
        broken.submit("lost?", job_id="retry-me")
    broken.close()
    assert chaos.store.get("retry-me") is None and chaos.store.counts()["unpublished"] == 0
    chaos.worker("w1", concurrency=2)
    assert chaos.client.submit("retried", job_id="retry-me").created  # the retried key submits afresh
    assert chaos.client.result("retry-me", timeout=30).content.endswith("You said: retried")


@pytest.mark.timeout(150)
def test_sigkill_of_a_prefork_pool_child_mid_job(chaos: Chaos) -> None:
    """The common prefork fault: one child dies, the worker lives on and replaces it."""
    worker = chaos.worker("forked", concurrency=4, pool="prefork")
    chaos.submit(4)
    _running(chaos, worker, 4)
    children = psutil.Process(worker.pid).children(recursive=True)
    assert len(children) == 4  # a real prefork pool (a configured pool once overrode `-P prefork`)
    killed_at = time.monotonic()
    children[0].send_signal(signal.SIGKILL)
    chaos.wait_finished(timeout=RECOVERY_BOUND + LLM_SECONDS)
    slowest = time.monotonic() - killed_at
    assert worker.alive()
    ledger = chaos.ledger()
    assert (len(ledger.answered), ledger.failed, ledger.unfinished, ledger.double_ends) == (4, {}, [], []), \
        ledger.summary()
    assert len(ledger.recovered()) == 1  # only the killed child's job ran twice
    assert chaos.mock.stats("llm")["chat_requests"] == 5
    print(f"\n[chaos] prefork child SIGKILL: 4 submitted, {ledger.summary()}, slowest {slowest:.1f}s")


@pytest.mark.timeout(150)
def test_sigterm_hands_back_jobs_that_outlast_the_grace(chaos: Chaos) -> None:
    chaos.mock.configure("llm", ttft=8)
    leaving = chaos.worker("leaving", concurrency=4, agent_shutdown_grace=1)
    chaos.submit(2)
    _running(chaos, leaving, 2)
    chaos.worker("staying", concurrency=4)
    stopped_at = time.monotonic()
    leaving.kill(signal.SIGTERM)
    wait_for(lambda: all(any(e.get("event") == "handed_back" for e in (chaos.store.get(j) or {})["history"])
                         for j in chaos.submitted), timeout=10, what="both jobs handed back")
    handed_after = time.monotonic() - stopped_at
    chaos.wait_finished(timeout=60)
    ledger = chaos.ledger()
    assert (len(ledger.answered), ledger.failed, ledger.double_ends) == (2, {}, []), ledger.summary()
    assert all((chaos.store.get(j) or {})["worker"].startswith("staying@") for j in chaos.submitted)
    assert handed_after < 8  # handed back after the grace, not when the leaving run ended
    print(f"\n[chaos] SIGTERM past the grace: 2 submitted, {ledger.summary()}, handed back after {handed_after:.1f}s")


TAKE_AND_HANG = """
import sys, time
from kombu import Connection, Queue
with Connection(sys.argv[1], transport_options={"visibility_timeout": 10}) as conn:
    with conn.Consumer([Queue("chat.default")], accept=["json"], no_ack=False,
                       callbacks=[lambda body, message: print("taken", flush=True)]):
        conn.drain_events(timeout=20)
        time.sleep(60)  # holds the message unacked, like a worker killed before its claim
"""


@pytest.mark.timeout(120)
def test_a_message_taken_by_a_consumer_that_dies_before_claiming(chaos: Chaos) -> None:
    taker = subprocess.Popen([sys.executable, "-c", TAKE_AND_HANG, chaos.server.url], stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        [job_id] = chaos.submit(1)
        assert taker.stdout is not None and taker.stdout.readline().strip() == "taken"
    finally:
        taker.kill()
        taker.wait(5)
    assert (chaos.store.get(job_id) or {})["claims"] == 0  # no lease, so the sweep cannot see it
    killed_at = time.monotonic()
    chaos.worker("w1", concurrency=2)
    chaos.wait_finished(timeout=60)
    assert len(chaos.ledger().answered) == 1
    print(f"\n[chaos] consumer died before its claim: answered {time.monotonic() - killed_at:.1f}s later")


@pytest.mark.timeout(60)
def test_a_worker_killed_mid_discovery_blocks_discovery_for_one_lock_ttl(chaos: Chaos) -> None:
    """Its lock is left behind unrenewed; a starting worker waits it out instead of skipping."""
    assert chaos.redis.lock(Keys().lock("discovery"), timeout=LOCK_TTL).acquire(blocking=False)
    started = time.monotonic()
    chaos.worker("starter", concurrency=2)
    chaos.submit(1)
    chaos.wait_finished(timeout=LOCK_TTL + 20)
    assert len(chaos.ledger().answered) == 1
    print(f"\n[chaos] discovery lock of a killed worker: job answered {time.monotonic() - started:.1f}s "
          f"after the worker started (lock TTL {LOCK_TTL:g}s)")
