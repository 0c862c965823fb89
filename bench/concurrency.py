"""concurrency: one worker process, 100 threads, a 0.5 s LLM: jobs/s as a share of 200/s, and RSS."""

from __future__ import annotations

from bench import plots
from bench.harness import Rig, calibrate, measure_bare, measure_llmpool
from bench.scenario import Result, Row, Size

THREADS, TTFT = 100, 0.5
GOAL_SHARE, GOAL_RSS_MB = 0.85, 150


def run(size: Size) -> Result:
    jobs = size.pick(1000, 100)
    with Rig(ttft=TTFT, tps=100_000, threads=THREADS, mock_processes=size.pick(2, 1), warm_up=size.pick(50, 5)) as rig:
        mock = calibrate(rig, size.pick(1600, 200), 4 * THREADS)  # 4x the threads: up to 800/s
        bare = measure_bare(rig, jobs)
        ours = measure_llmpool(rig, jobs)
    ideal = THREADS / TTFT
    share = ours.rate / ideal
    figures = {"jobs": jobs, "threads": THREADS, "llm_ttft_s": TTFT, "ideal_jobs_per_s": ideal,
               "llmpool_jobs_per_s": round(ours.rate, 1), "bare_jobs_per_s": round(bare.rate, 1),
               "share_of_ideal": round(share, 3), "ratio_to_bare": round(ours.rate / bare.rate, 3),
               "worker_rss_mb": round(ours.rss_mb, 1), "bare_worker_rss_mb": round(bare.rss_mb, 1),
               # One process under the GIL: its CPU per job bounds its rate (1000 / cpu_ms jobs/s at most).
               "worker_cpu_ms_per_job": ours.cpu_ms, "bare_worker_cpu_ms_per_job": bare.cpu_ms,
               "calibration": mock, "failed": ours.failed + bare.failed,
               "failure_reasons": {"llmpool": ours.reasons, "bare": bare.reasons}}
    rows = [Row("llmpool jobs/s", round(ours.rate, 1)),
            Row("share of ideal (100 threads / 0.5 s = 200/s)", round(share, 3), f">= {GOAL_SHARE}",
                share >= GOAL_SHARE),
            Row("worker RSS (MB)", round(ours.rss_mb, 1), f"< {GOAL_RSS_MB}", ours.rss_mb < GOAL_RSS_MB),
            Row("bare Celery jobs/s", round(bare.rate, 1)),
            Row("worker CPU per job, llmpool / bare Celery (ms)", f"{ours.cpu_ms} / {bare.cpu_ms}"),
            Row("mock alone, plain HTTP load (jobs/s)", round(mock["mock_jobs_per_s"], 1),
                ">= 1.5 x ideal (the mock is not the limit)", mock["mock_jobs_per_s"] >= 1.5 * ideal),
            Row("failed jobs", figures["failed"], "0", figures["failed"] == 0)]
    png = plots.bars(size.out / "concurrency.png", f"{jobs} jobs, 100 threads, 0.5 s LLM", "jobs/s",
                     {"ideal": ideal, "mock alone": mock["mock_jobs_per_s"], "bare Celery": bare.rate,
                      "llmpool": ours.rate})
    return Result(figures, rows, [png])
