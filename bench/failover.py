"""failover: steady load; the selected endpoint dies (refuses; then, separately, hangs) and returns.

`python -m bench failover`. Two mock containers (the 70B, selected, and the 8B) in one mock; RATE
jobs a second for DURATION s; the 70B plays the fault from DIE_AT to BACK_AT. Each fault runs twice
on the same mock: through llmpool (a real Redis, 2 worker processes x 16 threads) and through
LiteLLM's Router (bench/hung_litellm.py: a fallback 70B -> 8B, its timeout set to llmpool's request
timeout). Figures: a timeline of which endpoint served each job, jobs lost, failed calls, and the
time to move away from the dead endpoint and back to it. LiteLLM is in the bench extra only: without
it (or with BENCH_SKIP_LITELLM=1) those runs are skipped, and the result says so.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import plots
from bench.hung_timeline import Chat, Plan
from bench.progress import bar
from bench.scenario import Result, Row, Size
from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from tests.pool import start_pool

FAULTS = ("refuse", "hang")
MAX_FAILURES = 3  # AGENT_MAX_FAILURES of the pool
LANES = ("70b", "8b", "lost")


@dataclass(frozen=True)
class Timing:
    rate: float
    duration: float
    die_at: float
    back_at: float
    request_timeout: float  # llmpool's AGENT_REQUEST_TIMEOUT and LiteLLM's Router timeout
    workers: int  # llmpool worker processes (x 16 threads)


@dataclass(frozen=True)
class Served:
    sent: float  # seconds after the load started
    done: float | None  # seconds after the load started, None when lost
    who: str  # one of LANES
    failed_calls: int


def _containers() -> list[ContainerSpec]:
    return [ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.05, tokens_per_second=400),
            ContainerSpec(name="backup", model_name="Llama-3.1-8B-Instruct", ttft=0.05, tokens_per_second=400)]


def _llmpool(tmp: Path, server: RedisServer, mock: MockLLM, fault: str, timing: Timing) -> tuple[list[Served], float]:
    """The jobs as served, and the unix time the load started (the pool takes seconds to start before)."""
    pool = start_pool(tmp, server, mock, workers=timing.workers, threads=16, max_failures=MAX_FAILURES,
                      agent_breaker_open_wait=0.5, agent_breaker_open_wait_max=2,
                      agent_request_timeout=timing.request_timeout,
                      agent_first_token_timeout=min(5.0, timing.request_timeout))
    names = {deploy_id("primary"): "70b", deploy_id("backup"): "8b"}
    try:
        jobs, faulted, t0 = [], False, time.time()
        with bar(int(timing.rate * timing.duration), f"llmpool {fault}") as progress:
            while (at := time.time() - t0) < timing.duration:
                if at >= timing.die_at and not faulted:
                    mock.set_fault("primary", fault, seconds=timing.back_at - timing.die_at)
                    faulted = True
                jobs.append((at, pool.submit(1)[0]))
                progress.update()
                time.sleep(max(0.0, len(jobs) / timing.rate - (time.time() - t0)))
        records = pool.finished([job_id for _, job_id in jobs], timeout=timing.request_timeout * 4 + 60)
    finally:
        pool.stop()
    served = []
    for (at, _), record in zip(jobs, records, strict=True):
        result = record.get("result") or {}
        # Every LLM call the job made, over all its runs (a run that failed a call and then waited
        # adds to the record's `calls`; the result's `attempts` counts the last run only), hedges
        # included: all but the one that answered got no answer.
        calls = int(record.get("calls") or 0)
        if record.get("state") != "succeeded":
            served.append(Served(at, None, "lost", calls))
            continue
        served.append(Served(at, float(record["finished_at"]) - t0, names.get(str(result.get("endpoint")), "?"),
                             max(0, calls - 1)))
    return served, t0


def _litellm(mock: MockLLM, fault: str, timing: Timing) -> tuple[list[Served], int]:
    from bench.hung_litellm import failed_calls_counter, run_litellm

    plan = Plan(rate=timing.rate, duration=timing.duration, hang_at=timing.die_at,
                hang_for=timing.back_at - timing.die_at)
    counter = failed_calls_counter()
    try:
        chats, _ = run_litellm(plan, big_url=mock.url("primary"), small_url=mock.url("backup"),
                               hang=lambda: mock.set_fault("primary", fault, seconds=plan.hang_for),
                               timeout=timing.request_timeout)
    finally:
        counter.remove()
    return [_from_chat(c) for c in chats], counter.failed


def _from_chat(chat: Chat) -> Served:
    if chat.latency is None:
        return Served(chat.sent, None, "lost", 0)
    return Served(chat.sent, chat.sent + chat.latency, chat.endpoint, 0)


def _figures(served: list[Served], timing: Timing, failed_calls: int, calls_while_dead: int) -> dict[str, Any]:
    away = [s.done - timing.die_at for s in served
            if s.who == "8b" and s.done is not None and s.done >= timing.die_at]
    back = [s.sent - timing.back_at for s in served if s.who == "70b" and s.sent >= timing.back_at]
    return {"jobs": len(served), "jobs_lost": sum(s.who == "lost" for s in served),
            "failed_calls": failed_calls, "calls_to_dead_endpoint_seen_by_mock": calls_while_dead,
            "served_by": {who: sum(s.who == who for s in served) for who in ("70b", "8b")},
            "move_away_s": round(min(away), 3) if away else None,
            "move_back_s": round(min(back), 3) if back else None,
            "jobs_timeline": [[round(s.sent, 3), s.who, s.failed_calls] for s in served]}


def _calls_while_dead(mock: MockLLM, since: float, timing: Timing) -> int:
    """Chat requests the 70B received during its outage (a hung one sees them; a refusing one cannot)."""
    start, end = since + timing.die_at, since + timing.back_at
    return sum(1 for r in mock.stats("primary")["records"]
               if r["path"].endswith("/chat/completions") and start <= r["time"] < end)


def run(size: Size) -> Result:
    timing = size.pick(Timing(rate=20, duration=30, die_at=10, back_at=20, request_timeout=10, workers=2),
                       Timing(rate=10, duration=3, die_at=1, back_at=2, request_timeout=2, workers=1))
    skipped = []
    if importlib.util.find_spec("litellm") is None:
        skipped.append("LiteLLM's Router runs: litellm is not installed (pip install -e .[bench])")
    elif os.environ.get("BENCH_SKIP_LITELLM") == "1":
        skipped.append("LiteLLM's Router runs: BENCH_SKIP_LITELLM=1")
    have_litellm = not skipped
    runs: dict[str, dict[str, Any]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="llmpool-bench-failover-"))
    with MockLLM(containers=_containers()) as mock:
        for fault in FAULTS:
            with RedisServer(data_dir=tmp / f"redis-{fault}", appendonly=False) as server:
                _fresh(mock)
                served, since = _llmpool(tmp, server, mock, fault, timing)
                runs[f"llmpool {fault}"] = _figures(served, timing, sum(s.failed_calls for s in served),
                                                    _calls_while_dead(mock, since, timing))
            if have_litellm:
                _fresh(mock)
                since = time.time()
                served, failed = _litellm(mock, fault, timing)
                runs[f"LiteLLM {fault}"] = _figures(served, timing, failed, _calls_while_dead(mock, since, timing))
    png = plots.timeline(
        size.out / "failover.png",
        f"{timing.rate:g} jobs/s; the 70B {'/'.join(FAULTS)} from {timing.die_at:g} s to {timing.back_at:g} s\n"
        "(ringed: the job needed more than one call)",
        {name: [(at, who, failed > 0) for at, who, failed in figures["jobs_timeline"]]
         for name, figures in runs.items()},
        events=[(timing.die_at, "dies"), (timing.back_at, "returns")], lanes=LANES)
    rows = []
    for name, figures in runs.items():
        ours = name.startswith("llmpool")
        rows += [Row(f"{name}: jobs lost", f"{figures['jobs_lost']} of {figures['jobs']}", "0" if ours else "",
                     figures["jobs_lost"] == 0 if ours else None),
                 Row(f"{name}: failed calls", figures["failed_calls"], f"<= {MAX_FAILURES}" if ours else "",
                     figures["failed_calls"] <= MAX_FAILURES if ours else None),
                 Row(f"{name}: move away / back (s)", f"{figures['move_away_s']} / {figures['move_back_s']}",
                     "away < 1 s" if ours else "",
                     (figures["move_away_s"] is not None and figures["move_away_s"] < 1) if ours else None)]
    figures_out = {"timing": vars(timing), "max_failures": MAX_FAILURES, "runs": runs,
                   "litellm_settings": "fallbacks 70b -> 8b, timeout = llmpool's request timeout, defaults otherwise"}
    return Result(figures_out, rows, [png], skipped)


def _fresh(mock: MockLLM) -> None:
    for name in ("primary", "backup"):
        mock.configure(name, fault="none")
        mock.reset(name)
