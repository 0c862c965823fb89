"""The high-priority lane on a real worker: a high job runs while every `-c` slot holds a low one.

One worker with `-c 1`, a 1 s mock LLM call, a backlog of low jobs. With AGENT_HIGH_PRIORITY_SLOTS=1
the high job submitted while the one slot is busy starts before that low job ends (the lane's
thread runs it), and no two low jobs ever run at once (the lane never takes a low job). With 0
slots the same high job waits for that low job to end: the ordering the lane changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.utils.json import dumps

from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer
from tests.pool import Pool, start_pool
from tests.processes import wait_for

LLM_SECONDS = 1.0
LOW_JOBS = 3


@pytest.fixture
def one_slot_pool(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pool]:
    spec = ContainerSpec(name="llm", model_name="Llama-3.1-8B-Instruct", ttft=LLM_SECONDS)
    with RedisServer(data_dir=tmp_path / "redis", appendonly=False) as server, MockLLM(containers=[spec]) as mock:
        pool = start_pool(tmp_path, server, mock, workers=1, threads=1,
                          agent_high_priority_slots=request.param)
        try:
            yield pool
        finally:
            pool.stop()


def _overlapping(records: list[dict[str, Any]]) -> int:
    """Pairs of jobs whose runs (started_at to finished_at) overlap."""
    spans = sorted((float(r["started_at"]), float(r["finished_at"])) for r in records)
    return sum(1 for (_, end), (start, _) in zip(spans, spans[1:], strict=False) if start < end)


def _push_headerless_high(pool: Pool) -> None:
    """A kombu envelope on chat.high with no headers (not a Celery task): the lane reads it first."""
    envelope = {"body": "", "content-type": "application/json", "content-encoding": "utf-8", "headers": None,
                "properties": {"delivery_tag": "not-a-task", "priority": 0, "body_encoding": "base64",
                               "delivery_info": {"exchange": "", "routing_key": "chat.high"}}}
    with redis.Redis.from_url(pool.server.url) as conn:
        conn.lpush("chat.high", dumps(envelope))


def _run_behind_low_backlog(pool: Pool, *, junk_first: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    low_ids = pool.submit(LOW_JOBS, priority="low")
    wait_for(lambda: bool((pool.store.get(low_ids[0]) or {}).get("started_at")), timeout=30,
             what="the first low job to start")
    if junk_first:
        _push_headerless_high(pool)
    high = pool.finished(pool.submit(1, priority="high"), timeout=60)[0]
    low = pool.finished(low_ids, timeout=60)
    return high, low


@pytest.mark.timeout(90)
@pytest.mark.parametrize("one_slot_pool", [1], indirect=True)
def test_a_high_job_runs_beside_a_low_job_holding_the_only_slot(one_slot_pool: Pool) -> None:
    high, low = _run_behind_low_backlog(one_slot_pool, junk_first=True)  # the junk neither stops nor holds the lane
    assert [r["state"] for r in [high, *low]] == ["succeeded"] * (LOW_JOBS + 1)
    assert float(high["started_at"]) < float(low[0]["finished_at"])  # the lane ran it meanwhile
    assert _overlapping(low) == 0  # low jobs kept to the one `-c` slot: the lane took none


@pytest.mark.timeout(90)
@pytest.mark.parametrize("one_slot_pool", [1], indirect=True)
def test_the_lane_takes_no_more_high_jobs_than_it_has_slots(one_slot_pool: Pool) -> None:
    pool = one_slot_pool
    low_ids = pool.submit(1, priority="low")
    wait_for(lambda: bool((pool.store.get(low_ids[0]) or {}).get("started_at")), timeout=30,
             what="the low job to start")
    high_ids = pool.submit(3, priority="high")
    wait_for(lambda: any((pool.store.get(i) or {}).get("started_at") for i in high_ids), timeout=30,
             what="a high job to start in the lane")
    with redis.Redis.from_url(pool.server.url) as conn:
        waiting = conn.llen("chat.high")
    running = [r for r in (pool.store.get(i) or {} for i in [*low_ids, *high_ids]) if not r.get("finished_at")]
    assert len(running) == 4, "a call ended before the queue was read: the check needs longer calls here"
    assert waiting == 2  # both slots busy: the other two high jobs wait in Redis, not in the worker
    records = pool.finished([*low_ids, *high_ids], timeout=60)
    assert [r["state"] for r in records] == ["succeeded"] * 4


@pytest.mark.timeout(90)
@pytest.mark.parametrize("one_slot_pool", [0], indirect=True)
def test_without_the_lane_a_high_job_waits_for_the_low_job_ahead(one_slot_pool: Pool) -> None:
    high, low = _run_behind_low_backlog(one_slot_pool)
    assert [r["state"] for r in [high, *low]] == ["succeeded"] * (LOW_JOBS + 1)
    assert float(high["started_at"]) >= float(low[0]["finished_at"])
    assert float(high["started_at"]) < float(low[1]["started_at"])  # still first once a slot is free
