"""Failover under steady load: which endpoint served each job when the selected one dies and returns.

`python -m bench.failover`: two mock containers, 2 worker processes x 16 threads, 20 jobs/s for 12 s;
the primary refuses connections from 3 s to 8 s. Prints a timeline (jobs per 0.5 s by endpoint),
jobs lost, failed calls on the primary, and how long after its death jobs went straight to the backup.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from tests.pool import start_pool

RESULTS = Path(__file__).parent / "results"
DURATION, RATE, DIE_AT, RECOVER_AT, BIN = 12.0, 20.0, 3.0, 8.0, 0.5
PRIMARY, BACKUP = deploy_id("primary"), deploy_id("backup")


def _drive(pool, mock) -> list[tuple[float, dict]]:  # noqa: ANN001
    """Submit at RATE for DURATION; (submit time, final record) of every job."""
    jobs, died, recovered, t0 = [], False, False, time.time()
    while (at := time.time() - t0) < DURATION:
        if at >= DIE_AT and not died:
            mock.set_fault("primary", "refuse")
            died = True
        if at >= RECOVER_AT and not recovered:
            mock.set_fault("primary", "none")
            recovered = True
        jobs.append((at, pool.submit(1)[0]))
        time.sleep(max(0.0, (len(jobs) / RATE) - (time.time() - t0)))
    records = pool.finished([job_id for _, job_id in jobs], timeout=120)
    return [(at, record) for (at, _), record in zip(jobs, records, strict=True)]


def _latency(jobs: list[tuple[float, dict]], start: float, end: float) -> dict[str, float]:
    """Seconds from submission to answer for the jobs submitted in [start, end)."""
    spans = []
    for at, record in jobs:
        if start <= at < end and record.get("finished_at"):
            spans.append(record["finished_at"] - record["created_at"])
    spans.sort()
    return {"p50": round(spans[len(spans) // 2], 3), "p95": round(spans[int(len(spans) * 0.95)], 3),
            "max": round(spans[-1], 3)} if spans else {}


def _failed_calls(jobs: list[tuple[float, dict]]) -> list[float]:
    """When each failed call happened (submit time of a job that needed more than one call)."""
    return [round(at, 2) for at, r in jobs if r.get("state") == "succeeded" and r["result"]["attempts"] > 1]


def _timeline(jobs: list[tuple[float, dict]]) -> list[dict[str, object]]:
    bins: dict[float, dict[str, int]] = {}
    for at, record in jobs:
        row = bins.setdefault(round(at - at % BIN, 1), {"primary": 0, "backup": 0, "failed": 0})
        if record.get("state") != "succeeded":
            row["failed"] += 1
        else:
            row["primary" if record["result"]["endpoint"] == PRIMARY else "backup"] += 1
    return [{"t": t, **row} for t, row in sorted(bins.items())]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="llmpool-failover-"))
    containers = [ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.05, tokens_per_second=400),
                  ContainerSpec(name="backup", model_name="Llama-3.1-8B-Instruct", ttft=0.05, tokens_per_second=400)]
    with RedisServer(data_dir=tmp / "redis", appendonly=False) as server, MockLLM(containers=containers) as mock:
        pool = start_pool(tmp, server, mock, workers=2, threads=16, agent_breaker_open_wait=0.5,
                          agent_breaker_open_wait_max=2)
        try:
            jobs = _drive(pool, mock)
            stats = pool.admitter.stats([PRIMARY])[PRIMARY]
            latency = {"before_death": _latency(jobs, 0, DIE_AT),
                       "during_outage": _latency(jobs, DIE_AT, RECOVER_AT),
                       "after_recovery": _latency(jobs, RECOVER_AT, DURATION)}
        finally:
            pool.stop()
    lost = sum(1 for _, r in jobs if r.get("state") != "succeeded")
    failed = _failed_calls(jobs)
    report = {"jobs": len(jobs), "jobs_lost": lost, "max_failures": 3,
              "failed_calls_on_primary": len(failed), "failed_call_times_s": failed,
              "breaker_trips": stats["trips"], "latency_s": latency, "timeline": _timeline(jobs)}
    print(json.dumps({k: v for k, v in report.items() if k != "timeline"}, indent=2))
    for row in report["timeline"]:
        print(f"  t={row['t']:>4}s  primary {row['primary']:>3}  backup {row['backup']:>3}  failed {row['failed']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"failover-{int(time.time())}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
