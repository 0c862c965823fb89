"""A per-minute rate limit shared by 4 worker processes: llmpool's GCRA in Redis vs Celery's rate_limit.

`python -m bench.ratelimit [--rpm 60] [--window 30]`: both variants get the same backlog of jobs
against one mock LLM; we count the requests that reached the LLM in the first `window` seconds and
compare with what the limit allows (rpm * window / 60, plus llmpool's small burst).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer
from tests.pool import start_pool
from tests.processes import ManagedProcess, clean_env, wait_for

RESULTS = Path(__file__).parent / "results"
WORKERS = 4
BURST = 2


def _reached(mock: MockLLM, since: float, window: float) -> int:
    times = sorted(r["time"] for r in mock.stats("primary")["records"]
                   if r["path"] == "/v1/chat/completions" and r["time"] >= since)
    return sum(1 for t in times if t < times[0] + window) if times else 0


def ours(tmp: Path, rpm: int, window: float) -> int:
    spec = ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.01)
    with RedisServer(data_dir=tmp / "ours", appendonly=False) as server, MockLLM(containers=[spec]) as mock:
        pool = start_pool(tmp, server, mock, workers=WORKERS, threads=8, agent_endpoint_rpm=rpm,
                          agent_rate_burst=BURST)
        try:
            started = time.time()
            pool.submit(rpm * 2, deadline=time.time() + 600)
            time.sleep(window + 2)
            return _reached(mock, started, window)
        finally:
            pool.stop()


def celery_rate_limit(tmp: Path, rpm: int, window: float) -> int:
    spec = ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.01)
    with RedisServer(data_dir=tmp / "celery", appendonly=False) as server, MockLLM(containers=[spec]) as mock:
        env = {**clean_env(redis_url=server.url), "BENCH_RATE_LIMIT": f"{rpm}/m"}
        workers = []
        try:
            for n in range(WORKERS):
                argv = [sys.executable, "-m", "celery", "-A", "bench.bare", "worker", "-P", "threads", "-c", "8",
                        "-Q", "bench.bare", "-n", f"bare{n}@{os.getpid()}", "--without-gossip", "--without-mingle",
                        "--loglevel", "WARNING"]
                workers.append(ManagedProcess(f"bare{n}", argv, env, tmp / f"bare{n}.log").start())
            from bench.bare import app
            app.conf.broker_url = app.conf.result_backend = server.url
            wait_for(lambda: len(app.control.ping(timeout=0.5)) == WORKERS, timeout=30, what="bare workers")
            url, started = mock.url("primary") + "/v1/chat/completions", time.time()
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
            for _ in range(rpm * 2):
                app.send_task("bench.bare_chat_limited", args=[url, body], queue="bench.bare")
            time.sleep(window + 2)
            return _reached(mock, started, window)
        finally:
            for worker in workers:
                worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ratelimit")
    parser.add_argument("--rpm", type=int, default=60)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmpool-ratelimit-"))
    allowed = args.rpm * args.window / 60
    llmpool_count = ours(tmp, args.rpm, args.window)
    celery_count = celery_rate_limit(tmp, args.rpm, args.window)
    report = {"rpm": args.rpm, "window_s": args.window, "workers": WORKERS, "allowed_by_limit": allowed,
              "llmpool_reached_llm": llmpool_count, "llmpool_ratio": round(llmpool_count / allowed, 3),
              "celery_rate_limit_reached_llm": celery_count, "celery_ratio": round(celery_count / allowed, 3)}
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ratelimit-{int(time.time())}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
