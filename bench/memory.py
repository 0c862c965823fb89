"""`python -m bench.memory`: what one job costs in Redis, queued and finished, with typical sizes.

Submits N jobs with no worker running (Redis used_memory per queued job: the record with its
payload and the broker's message), then starts a worker and lets them all finish (per finished
job: the record with its answer, the history and the token stream). Once with answers returned
whole (JSON), once streamed (token events in the stream). Per-key sizes (MEMORY USAGE) of a
sample of jobs split the finished cost by what lives 24 h (record, history) and what lives
AGENT_STREAM_TTL (the stream). Results land in bench/results/memory-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from llmpool.client import Client
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from tests.processes import clean_env, start_worker, wait_for

RESULTS = Path(__file__).parent / "results"
PROMPT_CHARS = 600  # a typical chat turn: a few sentences of question and context
ANSWER_CHARS = 1200  # about 300 tokens of answer
SAMPLE = 50


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _key_sizes(client: redis.Redis, keys: Keys, job_ids: list[str]) -> dict[str, float]:
    sizes: dict[str, list[int]] = {"record": [], "history": [], "stream": []}
    for job_id in job_ids[:SAMPLE]:
        for name, key in (("record", keys.job(job_id)), ("history", keys.job_history(job_id)),
                          ("stream", keys.job_stream(job_id))):
            sizes[name].append(int(client.memory_usage(key, samples=0) or 0))
    return {name: statistics.mean(values) for name, values in sizes.items()}


def measure(jobs: int, *, stream: bool, threads: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="llmpool-bench-memory-"))
    reply = ("lorem ipsum " * (ANSWER_CHARS // 12 + 1))[:ANSWER_CHARS]
    spec = ContainerSpec(name="llm", ttft=0.01, tokens_per_second=100_000, reply=reply)
    with RedisServer(data_dir=tmp / "redis", appendonly=False) as server, MockLLM(containers=[spec]) as mock:
        conn = redis.Redis.from_url(server.url)
        keys = Keys()
        env = clean_env(redis_url=server.url, local_llm_host="127.0.0.1", local_llm_port=mock.port("llm"),
                        agent_backend_url=f"http://127.0.0.1:{free_port()}")
        with Client(server.url) as client:
            prompt = ("x" * PROMPT_CHARS)
            client.submit(prompt)  # queues, bindings and scripts exist before the baseline
            conn.delete("chat.default")
            base = _used(conn)
            ids = [client.submit(prompt, stream=stream, thread_id=None).job_id for _ in range(jobs)]
            queued = _used(conn)
            worker = start_worker(tmp, env, name="memory", concurrency=threads, loglevel="WARNING")
            try:
                store = JobStore(conn, keys, ttl=600, stream_ttl=600)
                until = time.time() + 600
                for job_id in ids:
                    list(store.events(job_id, until=until))
                wait_for(lambda: not conn.exists("unacked", keys.jobs_running()), timeout=60, what="acks")
                states = [(store.get(j) or {}).get("state") for j in ids[:SAMPLE]]
                finished = _used(conn)
                sizes = _key_sizes(conn, keys, ids)
            finally:
                worker.stop()
    return {"jobs": jobs, "stream": stream, "prompt_chars": PROMPT_CHARS, "answer_chars": ANSWER_CHARS,
            "sample_states": sorted(set(map(str, states))),
            "bytes_per_queued_job": round((queued - base) / jobs),
            "bytes_per_finished_job": round((finished - base) / jobs),
            "finished_key_bytes": {k: round(v) for k, v in sizes.items()},
            "finished_bytes_after_stream_ttl": round(sizes["record"] + sizes["history"])}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()
    runs = [measure(args.jobs, stream=stream, threads=args.threads) for stream in (False, True)]
    per_day_1gb = {("stream" if r["stream"] else "json"): round(2**30 / r["finished_bytes_after_stream_ttl"])
                   for r in runs}
    figures = {"scenario": "memory", "runs": runs,
               "finished_jobs_per_gib_within_result_ttl": per_day_1gb,
               "note": "Redis holds every job finished within AGENT_RESULT_TTL (24 h): their number times "
                       "finished_bytes_after_stream_ttl, plus the last AGENT_STREAM_TTL's streams, plus the "
                       "queued jobs times bytes_per_queued_job, must stay under maxmemory"}
    print(json.dumps(figures, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"memory-{int(time.time())}.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
