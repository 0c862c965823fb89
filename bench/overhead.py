"""overhead: llmpool.chat vs a bare Celery task making the same HTTP call, same pool and threads.

Alternating rounds, medians compared (a shared 2-core machine drifts between runs); a calibration
row shows the mock's own rate under a plain HTTP load (raw asyncio sockets) in the same run, so the figures are known
to measure the worker and not the mock.
"""

from __future__ import annotations

import statistics

from bench import plots
from bench.harness import Rig, calibrate, measure_bare, measure_llmpool
from bench.scenario import Result, Row, Size

GOAL = 0.9


def run(size: Size) -> Result:
    jobs, rounds, latency_jobs = size.pick(1000, 40), size.pick(3, 1), size.pick(20, 5)
    bare_runs, our_runs = [], []
    with Rig(ttft=0.02, tps=2000, threads=64, mock_processes=size.pick(2, 1), warm_up=size.pick(50, 5)) as rig:
        mock = calibrate(rig, size.pick(2000, 100), 64)
        for _ in range(rounds):
            bare_runs.append(measure_bare(rig, jobs, latency_jobs))
            our_runs.append(measure_llmpool(rig, jobs, latency_jobs))
    bare = statistics.median(r.rate for r in bare_runs)
    ours = statistics.median(r.rate for r in our_runs)
    ratio = ours / bare
    threads = 64
    figures = {"jobs": jobs, "rounds": rounds, "threads": threads, "llm_ttft_s": 0.02,
               "bare_jobs_per_s": [round(r.rate, 1) for r in bare_runs],
               "llmpool_jobs_per_s": [round(r.rate, 1) for r in our_runs],
               # One job at a time on an idle worker: submit to answer, median over the rounds.
               "bare_latency_ms": round(statistics.median(r.latency_ms for r in bare_runs), 1),
               "llmpool_latency_ms": round(statistics.median(r.latency_ms for r in our_runs), 1),
               "ratio_of_medians": round(ratio, 3), "calibration": mock,
               "bare_cpu_ms_per_job": [r.cpu_ms for r in bare_runs],
               "llmpool_cpu_ms_per_job": [r.cpu_ms for r in our_runs],
               "llmpool_worker_rss_mb": round(max(r.rss_mb for r in our_runs), 1),
               "bare_worker_rss_mb": round(max(r.rss_mb for r in bare_runs), 1),
               "failed": sum(r.failed for r in bare_runs + our_runs),
               "failure_reasons": sorted({why for r in bare_runs + our_runs for why in r.reasons})}
    rows = [Row("bare Celery jobs/s (median)", round(bare, 1)),
            Row("llmpool jobs/s (median)", round(ours, 1)),
            Row("llmpool / bare Celery", round(ratio, 3), f">= {GOAL}", ratio >= GOAL),
            Row("worker CPU per job, bare / llmpool (ms, median)",
                f"{statistics.median(r.cpu_ms for r in bare_runs)} / {statistics.median(r.cpu_ms for r in our_runs)}"),
            Row("per-job latency, one at a time, bare / llmpool (ms)",
                f"{figures['bare_latency_ms']} / {figures['llmpool_latency_ms']}"),
            Row("mock alone, plain HTTP load (jobs/s)", round(mock["mock_jobs_per_s"], 1),
                ">= 2 x llmpool's rate", mock["mock_jobs_per_s"] >= 2 * ours),
            Row("failed jobs", figures["failed"], "0", figures["failed"] == 0)]
    png = plots.bars(size.out / "overhead.png", f"{jobs} jobs, 64 threads, 20 ms LLM", "jobs/s",
                     {"mock alone": mock["mock_jobs_per_s"], "bare Celery": bare, "llmpool": ours})
    return Result(figures, rows, [png])
