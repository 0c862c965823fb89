"""Every key a worker leaves in Redis expires or is capped, and no chat job keeps a Celery result.

The job record is the one stored copy of an answer: the chat task has `ignore_result`, so neither
pool writes `celery-task-meta-<id>`, for a success or a failure; the beat ticks keep no result
either. Every other key has a TTL, or is one of the capped structures listed here with its bound.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from llmpool.client import Client
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from tests.processes import clean_env, start_worker, wait_for

# Keys without a TTL, each bounded by something other than time.
CAPPED = {
    r"llmpool:jobs:(running|parked|unpublished)": "one member per live job, removed when it ends",
    r"llmpool:registry:(endpoints|health|selection|discovery)": "one entry per endpoint, or one value",
    r"llmpool:workers": "one member per worker, forgotten an hour after its last heartbeat",
    r"_kombu\.binding(\.\S+|_permanent\.\S+|_deadlines)": "kombu: one set per exchange, one index of them",
    r"chat\.(high|default|low)|control": "Celery's queues: one message per queued job",
    r"unacked|unacked_index": "kombu: one entry per message a worker holds",
    r"llmpool:metrics:\w+": ("Prometheus counters and histograms: one field per label set, whose values are "
                             "bounded (endpoints in the registry, pruned at each scrape; llmpool's own codes)"),
}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockLLM]:
    with MockLLM(containers=[ContainerSpec(name="llm", ttft=0.01, tokens_per_second=500)]) as running:
        yield running


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_no_celery_result_and_every_key_expires_or_is_capped(tmp_path: Path, mock: MockLLM, pool: str) -> None:
    with RedisServer(data_dir=tmp_path / "redis", appendonly=False) as server:
        env = clean_env(redis_url=server.url, local_llm_host="127.0.0.1", local_llm_port=mock.port("llm"),
                        agent_backend_url=f"http://127.0.0.1:{free_port()}", agent_max_failures=10)
        worker = start_worker(tmp_path, env, concurrency=2, pool=pool)
        conn = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            with Client(server.url) as client:
                store = JobStore(client.redis, Keys(), ttl=600, stream_ttl=600)
                ok = [client.submit("hi").job_id, client.submit("hi", stream=True, thread_id="t").job_id]
                for job_id in ok:
                    list(store.events(job_id, until=time.time() + 30))
                mock.set_fault("llm", "error400", requests=1)
                failed = client.submit("rejected").job_id
                list(store.events(failed, until=time.time() + 30))
            assert [(store.get(j) or {}).get("state") for j in [*ok, failed]] == ["succeeded"] * 2 + ["failed"]
            wait_for(lambda: not conn.exists("unacked", "llmpool:jobs:running"), timeout=20,
                     what="every message to be acked")
            keys = set(conn.scan_iter("*"))
            assert not [k for k in keys if k.startswith("celery-task-meta-")]
            unbounded = sorted(k for k in keys if conn.ttl(k) < 0 and not k.startswith("llmpool:lock:")
                               and not any(re.fullmatch(p, k) for p in CAPPED))
            assert unbounded == []
        finally:
            mock.set_fault("llm", "none")
            worker.stop()
            conn.close()
