"""A Redis that fills up: submit answers 503 redis_full and writes nothing, the operator is told,
workers keep running, and every job accepted before is answered once Redis has room again.

Real parts: redis-server with a small maxmemory (noeviction), a worker process, the API, the mock
LLM. Redis is filled with data of someone else's (filler keys) until it refuses writes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from llmpool.errors import RedisFull
from llmpool.redis_memory import SUBMIT_LIMIT
from tests.chaos.harness import FAST_RECOVERY, Chaos, open_chaos
from tests.processes import ManagedProcess, start_api, wait_for

FILLER = "filler:"
CHUNK = 20_000


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def fill_until_refused(client: redis.Redis, *, headroom: int) -> None:
    """Give Redis a maxmemory `headroom` bytes above what it uses, then fill it until it refuses a write.

    maxmemory is then set just under what it uses, so that the odd freed byte (an expired key, a
    client buffer) does not let writes through again while the test looks.
    """
    client.config_set("maxmemory", used(client) + headroom)
    for n in range(100_000):
        try:
            client.set(f"{FILLER}{n}", b"x" * CHUNK)
        except redis.exceptions.OutOfMemoryError:
            break
    client.config_set("maxmemory", used(client) - 2**20)


def make_room(client: redis.Redis) -> None:
    for key in client.scan_iter(f"{FILLER}*"):
        client.delete(key)
    client.config_set("maxmemory", 0)


def job_keys(client: redis.Redis) -> set[bytes]:
    return set(client.scan_iter("llmpool:job:*"))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Chaos]:
    with open_chaos(tmp_path, llm_seconds=1.0, **FAST_RECOVERY) as chaos:
        yield chaos


@pytest.fixture
def api(rig: Chaos) -> Iterator[str]:
    proc: ManagedProcess | None = None
    try:
        proc, url = start_api(rig.tmp, rig.env)
        yield url
    finally:
        if proc is not None:
            proc.stop()


def test_submit_is_refused_before_redis_is_full_and_other_writes_still_pass(rig: Chaos) -> None:
    r = rig.redis
    rig.submit(1)  # queues and bindings exist, as in a running pool
    maxmemory = used(r) + 8 * 2**20
    r.config_set("maxmemory", maxmemory)
    band = (SUBMIT_LIMIT + 1) / 2  # between the submit limit and full
    n = 0
    while used(r) < band * maxmemory:
        r.set(f"{FILLER}{n}", b"x" * CHUNK)
        n += 1
    before = job_keys(r)
    with pytest.raises(RedisFull) as refused:
        rig.client.submit("one more")
    assert refused.value.code == "redis_full"
    assert job_keys(r) == before and not r.exists(rig.store.keys.jobs_unpublished())
    r.set("someone-elses-key", "still writable")  # Redis itself is not full: running jobs can finish
    make_room(r)
    assert rig.client.submit("accepted again").created


@pytest.mark.timeout(120)
def test_a_full_redis_refuses_jobs_with_503_keeps_workers_up_and_loses_no_accepted_job(rig: Chaos, api: str) -> None:
    worker = rig.worker("w1", concurrency=4)
    r = rig.redis
    accepted = rig.submit(8)  # 4 run (1 s each) while Redis fills, 4 wait in the queue
    wait_for(lambda: rig.running_on(worker) == 4, timeout=20, what="four jobs running")
    fill_until_refused(r, headroom=2 * 2**20)
    queued = {q: r.llen(q) for q in ("chat.default", "chat.high", "chat.low")}
    before = job_keys(r)

    with pytest.raises(RedisFull):
        rig.client.submit("refused")
    response = httpx.post(f"{api}/poll_requests", json={"message": "refused too"},
                          headers={"Accept": "application/json"}, timeout=30)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "redis_full"
    # Nothing half-written: no record, no message, nothing for the sweep to publish later.
    assert job_keys(r) == before
    assert {q: r.llen(q) for q in queued} == queued
    assert not r.exists(rig.store.keys.jobs_unpublished())
    status = httpx.get(f"{api}/status", timeout=30).json()
    assert status["redis_memory"]["state"] == "full" and "refused" in status["redis_memory"]["warning"]

    time.sleep(4)  # the running jobs try to finish, the worker to take the queued ones: all refused
    assert worker.alive(), worker.log_tail()
    make_room(r)
    rig.wait_finished(timeout=60)  # their messages come back after the visibility timeout (10 s)
    ledger = rig.ledger()
    assert ledger.answered == accepted and not ledger.double_ends, ledger.summary()
    log = worker.log_path.read_text()
    assert "Unrecoverable error" not in log and "Redis is full" in log
    assert worker.alive()
