"""ratelimit: 4 worker processes sharing R requests per period against one mock LLM.

llmpool's limit (AGENT_ENDPOINT_RPM, counted over AGENT_RATE_PERIOD: the bench shortens the period
so that a run takes seconds, not minutes) against Celery's own `rate_limit` set to the same rate,
which each worker applies on its own. Both get the same backlog (4 x R jobs at once); the figure
is the most requests the mock saw in any sliding window of one period, against R. LiteLLM's `rpm`
counts per minute only: its part (bench/ratelimit_litellm.py) offers twice its limit for 70 s and
counts 60 s windows; the smoke run skips it (and says so).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import plots
from bench.harness import CHAT_BODY
from bench.scenario import Result, Row, Size
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer
from tests.pool import start_pool
from tests.processes import ManagedProcess, clean_env, wait_for

BURST = 1  # AGENT_RATE_BURST: no burst above the rate, so the limit is the whole window's budget
GOAL = 1.05
LITELLM_SECONDS = 70.0  # its rpm counts per minute: a minute and a bit


@dataclass(frozen=True)
class Limit:
    requests: int  # R, shared by all workers
    period: float  # seconds R is counted over
    periods: int  # how many periods the backlog runs for
    workers: int  # worker processes sharing the limit (4; the smoke run starts fewer)


def _arrivals(mock: MockLLM) -> list[float]:
    return sorted(r["time"] for r in mock.stats("primary")["records"] if r["path"] == "/v1/chat/completions")


def max_in_window(times: list[float], window: float) -> int:
    """The most of `times` (sorted) in any half-open window [t, t + window)."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _spec() -> ContainerSpec:
    return ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.01, tokens_per_second=100_000)


def ours(tmp: Path, limit: Limit) -> list[float]:
    with RedisServer(data_dir=tmp / "ours", appendonly=False) as server, MockLLM(containers=[_spec()]) as mock:
        pool = start_pool(tmp, server, mock, workers=limit.workers, threads=8, agent_endpoint_rpm=limit.requests,
                          agent_rate_period=limit.period, agent_rate_burst=BURST)
        try:
            pool.submit(limit.requests * (limit.periods + 1), deadline=time.time() + 600)
            time.sleep(limit.period * limit.periods)
            return _arrivals(mock)
        finally:
            pool.stop()


def celery_rate_limit(tmp: Path, limit: Limit) -> list[float]:
    with RedisServer(data_dir=tmp / "celery", appendonly=False) as server, MockLLM(containers=[_spec()]) as mock:
        env = {**clean_env(redis_url=server.url), "BENCH_RATE_LIMIT": f"{limit.requests / limit.period:g}/s"}
        workers = []
        try:
            for n in range(limit.workers):
                argv = [sys.executable, "-m", "celery", "-A", "bench.bare", "worker", "-P", "threads", "-c", "8",
                        "-Q", "bench.bare", "-n", f"bare{n}@{os.getpid()}", "--without-gossip", "--without-mingle",
                        "--loglevel", "WARNING"]
                workers.append(ManagedProcess(f"bare{n}", argv, env, tmp / f"bare{n}.log").start())
            from bench.bare import app
            app.conf.broker_url = app.conf.result_backend = server.url
            wait_for(lambda: len(app.control.ping(timeout=0.5)) == limit.workers, timeout=30, what="bare workers")
            url = mock.url("primary") + "/v1/chat/completions"
            for _ in range(limit.requests * (limit.periods + 1)):
                app.send_task("bench.bare_chat_limited", args=[url, CHAT_BODY], queue="bench.bare")
            time.sleep(limit.period * limit.periods)
            return _arrivals(mock)
        finally:
            for worker in workers:
                worker.stop()


def litellm_rpm(tmp: Path, limit: Limit) -> tuple[list[float], dict[str, int]]:
    """The same rate as a per-minute `rpm` through LiteLLM's Routers; arrivals at the mock, outcomes."""
    from bench.ratelimit_litellm import offer_load

    rpm = round(limit.requests * 60 / limit.period)
    with RedisServer(data_dir=tmp / "litellm", appendonly=False) as server, MockLLM(containers=[_spec()]) as mock:
        outcomes = offer_load(mock.url("primary"), rpm=rpm, routers=limit.workers, offered_per_minute=2 * rpm,
                              seconds=LITELLM_SECONDS, redis_host="127.0.0.1", redis_port=server.port)
        return _arrivals(mock), outcomes


def run(size: Size) -> Result:
    limit = size.pick(Limit(requests=60, period=10.0, periods=3, workers=4),
                      Limit(requests=6, period=1.0, periods=2, workers=2))
    tmp = Path(tempfile.mkdtemp(prefix="llmpool-bench-ratelimit-"))
    seen = {"llmpool": ours(tmp, limit), "Celery rate_limit": celery_rate_limit(tmp, limit)}
    peaks = {name: max_in_window(times, limit.period) for name, times in seen.items()}
    skipped: list[str] = []
    litellm: dict[str, Any] = {}
    if size.quick:
        skipped.append("LiteLLM's rpm: it counts per minute, so its part takes over a minute; the smoke run skips it")
    elif importlib.util.find_spec("litellm") is None:
        skipped.append("LiteLLM's rpm: litellm is not installed (pip install -e .[bench])")
    else:
        times, outcomes = litellm_rpm(tmp, limit)
        rpm = round(limit.requests * 60 / limit.period)
        litellm = {"rpm": rpm, "offered_per_minute": 2 * rpm, "seconds": LITELLM_SECONDS, "outcomes": outcomes,
                   "max_in_any_60s_window": max_in_window(times, 60.0), "requests_seen": len(times)}
    figures = {"workers": limit.workers, "requests_per_period": limit.requests, "period_s": limit.period,
               "periods_run": limit.periods, "llmpool_burst": BURST,
               "celery_rate_limit_per_worker": f"{limit.requests / limit.period:g}/s",
               "max_in_any_window": peaks,
               "ratio_to_limit": {name: round(peak / limit.requests, 3) for name, peak in peaks.items()},
               "requests_seen": {name: len(times) for name, times in seen.items()}, "litellm_router": litellm}
    rows = [Row(f"{name}: most requests in any {limit.period:g} s window (limit {limit.requests})",
                f"{peak} ({peak / limit.requests:.2f} x)", f"<= {GOAL} x" if name == "llmpool" else "",
                peak <= GOAL * limit.requests if name == "llmpool" else None)
            for name, peak in peaks.items()]
    if litellm:
        peak, rpm = litellm["max_in_any_60s_window"], litellm["rpm"]
        rows.append(Row(f"LiteLLM rpm={rpm}, {limit.workers} Routers on one Redis: most requests in any 60 s window",
                        f"{peak} ({peak / rpm:.2f} x)"))
    title = f"{limit.workers} workers sharing {limit.requests} per {limit.period:g} s"
    png = plots.bars(size.out / "ratelimit.png", title, f"most requests in a {limit.period:g} s window",
                     {"limit": limit.requests, **peaks})
    return Result(figures, rows, [png], skipped)
