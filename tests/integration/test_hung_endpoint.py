"""Hung endpoints through real workers: suspicion, adaptive first-token timeouts and the share.

Real Redis, two real worker processes (16 threads each, so the fleet has 32 chat slots and an
endpoint's default share, AGENT_ENDPOINT_SHARE 0.5, is 16), the mock LLM with two containers: the
selected 70B and an 8B. Every other setting is `make up`'s default (AGENT_FIRST_TOKEN_TIMEOUT 60 s,
AGENT_REQUEST_TIMEOUT 300 s). The hang runs twice: with hedging off, to show what suspicion, the
adaptive first-token timeout and the share achieve by themselves, and with hedging on (the
default), where every hung call is cut short by its hedge and suspicion must still see the hang.

The issue's scenario at its own scale: 8 chats a second, the 70B hangs for 20 s (the mock reads
each request and never answers) while the 8B stays healthy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from tests.pool import Pool, start_pool
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(120)

BIG, SMALL = deploy_id("big"), deploy_id("small")
RATE = 8.0  # chats a second, whatever happens (an open loop)
OUTAGE = 20.0  # seconds the 70B hangs
WORKERS, THREADS = 2, 16
SHARE = int(0.5 * WORKERS * THREADS)  # AGENT_ENDPOINT_SHARE of the fleet's chat slots


@pytest.fixture
def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pool]:
    threads, hedging = getattr(request, "param", (THREADS, False))
    containers = [ContainerSpec(name="big", model_name="Llama-3.1-70B-Instruct", ttft=0.05, tokens_per_second=200),
                  ContainerSpec(name="small", model_name="Llama-3.1-8B-Instruct", ttft=0.05, tokens_per_second=200)]
    with RedisServer(data_dir=tmp_path / "redis", appendonly=False) as server, \
            MockLLM(containers=containers) as mock:
        pool = start_pool(tmp_path, server, mock, workers=WORKERS, threads=threads, agent_first_token_timeout=60,
                          agent_request_timeout=300, agent_hedge_enabled=str(hedging).lower())
        try:
            yield pool
        finally:
            pool.stop()


def _open_loop(pool: Pool, seconds: float, *, prefix: str) -> list[str]:
    """Submit RATE chats a second for `seconds`, on schedule whatever the pool does; their ids."""
    ids, started = [], time.monotonic()
    for n in range(int(seconds * RATE)):
        time.sleep(max(0.0, started + n / RATE - time.monotonic()))
        ids.append(pool.client.submit(f"{prefix} {n}", job_id=f"{prefix}-{n}").job_id)
    return ids


def _finished(pool: Pool, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    records = pool.finished(ids, timeout=timeout)
    states = [r.get("state") for r in records]
    assert states == ["succeeded"] * len(ids), {s: states.count(s) for s in set(states)}
    return records


def _latencies(records: list[dict[str, Any]]) -> list[float]:
    return sorted(float(r["finished_at"]) - float(r["created_at"]) for r in records)


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(0.95 * len(values)))]


def _ttft(pool: Pool, endpoint: str) -> dict[str, Any]:
    return pool.admitter.stats([endpoint])[endpoint]


@pytest.mark.parametrize("fleet", [(THREADS, False), (THREADS, True)], indirect=True, ids=["hedging-off", "hedging-on"])
def test_a_hung_70b_costs_the_pool_seconds_not_a_minute(fleet: Pool) -> None:
    warm = _finished(fleet, _open_loop(fleet, 4, prefix="warm"), timeout=30)  # the 70B's TTFT history
    assert {r["result"]["endpoint"] for r in warm} == {BIG}
    assert _ttft(fleet, BIG)["ttft"]["warm"]
    fleet.mock.reset("big")
    hang_at = time.time()
    fleet.mock.set_fault("big", "hang", seconds=OUTAGE)
    outage = _finished(fleet, _open_loop(fleet, OUTAGE, prefix="outage"), timeout=60)

    latencies = _latencies(outage)
    first_small = min(float(r["finished_at"]) for r in outage if r["result"]["endpoint"] == SMALL) - hang_at
    big = fleet.mock.stats("big")
    breaker = _ttft(fleet, BIG)
    hedging = fleet.env["AGENT_HEDGE_ENABLED"] == "true"
    print(f"\n[hung 70B, {RATE:g} chats/s, {OUTAGE:g} s, hedging {'on' if hedging else 'off'}] {len(outage)} chats, "
          f"all answered; "
          f"first 8B answer {first_small:.2f}s after the hang; latency p50 {statistics.median(latencies):.2f}s "
          f"p95 {_p95(latencies):.2f}s max {latencies[-1]:.2f}s; calls to the hung 70B {big['chat_requests']}, "
          f"peak in flight on it {big['peak_in_flight']} (share {SHARE}); suspicions {breaker['suspicions']}, "
          f"failure trips {breaker['trips']}, 70B TTFT p99 {breaker['ttft']['p99']}s "
          f"first-token timeout {breaker['ttft']['first_token_timeout']}s")
    assert first_small < 3.0
    assert _p95(latencies) < 5.0
    assert big["peak_in_flight"] <= SHARE
    assert breaker["suspicions"] >= 1  # the pool suspected the hang; it did not wait for failures
    # Without suspicion every chat tries the selected 70B first (with hedging: 160 of 160 calls).
    assert big["chat_requests"] < len(outage) / 2


@pytest.mark.parametrize("fleet", [(32, False)], indirect=True)  # 64 slots: its share (32) holds 8/s x 2 s
def test_a_slow_but_alive_70b_is_not_suspected(fleet: Pool) -> None:
    fleet.mock.configure("big", ttft=1.0)
    _finished(fleet, _open_loop(fleet, 3, prefix="history"), timeout=30)  # its history: TTFT about 1 s
    fleet.mock.configure("big", ttft=2.0)  # then its queue grows: TTFT doubles, within 3 x its p99
    loaded = _finished(fleet, _open_loop(fleet, 6, prefix="loaded"), timeout=60)
    breaker = _ttft(fleet, BIG)
    latencies = _latencies(loaded)
    failed_calls = [e for r in loaded for e in r.get("history", []) if e.get("event") == "call_failed"]
    print(f"\n[slow 70B, TTFT 1 s then 2 s, {RATE:g} chats/s] {len(loaded)} chats; latency p50 "
          f"{statistics.median(latencies):.2f}s max {latencies[-1]:.2f}s; suspicions {breaker['suspicions']}, "
          f"TTFT p99 {breaker['ttft']['p99']}s, first-token timeout {breaker['ttft']['first_token_timeout']}s, "
          f"peak in flight {fleet.mock.stats('big')['peak_in_flight']}")
    # While its first call waited past its p99 with nothing else moving it was overdue (admit.lua): chats
    # sent then went to the 8B, as its hedge would have sent them with hedging on (the default). Once
    # its new TTFT showed it served every chat, and none of them failed.
    on_big = [r for r in loaded if r["result"]["endpoint"] == BIG]
    first_answer = min(float(r["finished_at"]) for r in on_big)
    assert all(r["result"]["endpoint"] == BIG for r in loaded if float(r["created_at"]) > first_answer)
    assert len(loaded) - len(on_big) < len(loaded) / 4
    assert failed_calls == []
    assert (breaker["suspicions"], breaker["trips"]) == (0, 0)
    assert _latencies(on_big)[0] >= 2.0  # it really was that slow
    wait_for(lambda: _ttft(fleet, BIG)["ttft"]["awaiting_first_token"] == 0, timeout=5, what="no call waiting")
