"""A pool of real Celery worker processes on one Redis, with a client to submit chat jobs to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from llmpool.admission import Admitter
from llmpool.client import Client
from llmpool.dev.mock_llm import MockLLM
from llmpool.dev.redis_server import RedisServer
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.registry import Registry
from llmpool.settings import load_settings
from tests.processes import ManagedProcess, clean_env, start_api, start_worker, wait_for
from workers.config import celery_config

__all__ = ["Pool", "start_pool", "pool_with_api"]


@dataclass
class Pool:
    server: RedisServer
    mock: MockLLM
    tmp: Path
    env: dict[str, str]
    workers: list[ManagedProcess]
    app: Celery
    store: JobStore
    admitter: Admitter
    registry: Registry
    client: Client

    def submit(self, n: int, **job: object) -> list[str]:
        """Submit `n` jobs through the public Client; their ids."""
        return [self.client.submit(f"job {i}", **job).job_id for i in range(n)]

    def finished(self, job_ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
        """The jobs' records once every one is final (their end events, read from the streams)."""
        until = time.time() + timeout
        for job_id in job_ids:
            list(self.store.events(job_id, until=until))
        return [self.store.get(job_id) or {} for job_id in job_ids]

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.client.close()


def start_pool(tmp: Path, server: RedisServer, mock: MockLLM, *, workers: int = 4, threads: int = 8,
               max_failures: int = 3, endpoints: int | None = None, **settings: object) -> Pool:
    """Worker processes on one Redis, discovering the mock's containers; ready once all are selected
    (or `endpoints` of them, when other sources such as AGENT_OPENAI_SERVERS add theirs)."""
    defaults: dict[str, object] = {"agent_connect_timeout": 1, "agent_first_token_timeout": 5,
                                   "agent_request_timeout": 10}
    env = clean_env(
        redis_url=server.url, agent_backend_url=mock.backend_url, agent_fallback_to_local="false",
        agent_max_failures=max_failures, agent_health_check_interval=3600, agent_discovery_interval=3600,
        **{**defaults, **settings},  # a test may set any of the defaults (shorter timeouts, say)
    )
    client = redis.Redis.from_url(server.url)
    procs = [start_worker(tmp, env, name=f"w{n}", concurrency=threads, loglevel="WARNING") for n in range(workers)]
    keys = Keys()
    registry = Registry(client, keys)
    expected = len(mock.names()) if endpoints is None else endpoints
    wait_for(lambda: (s := registry.selection()) is not None and len(s.order) == expected,
             timeout=30, what="discovery of every container")
    app = Celery("test-client")
    app.conf.update(celery_config(load_settings(redis_url=server.url)))
    return Pool(server=server, mock=mock, tmp=tmp, env=env, workers=procs, app=app,
                store=JobStore(client, keys, ttl=600, stream_ttl=600), admitter=Admitter(client, keys),
                registry=registry, client=Client(server.url))


@contextmanager
def pool_with_api(tmp: Path, server: RedisServer, mock: MockLLM, **pool_args: object) -> Iterator[tuple[Pool, str]]:
    """`start_pool`, then the API under uvicorn on the pool's environment; the pool, the API and the
    mock are stopped however the test ends."""
    pool: Pool | None = None
    proc: ManagedProcess | None = None
    try:
        pool = start_pool(tmp, server, mock, **pool_args)  # type: ignore[arg-type]
        proc, url = start_api(tmp, pool.env)
        yield pool, url
    finally:
        if proc is not None:
            proc.stop()
        if pool is not None:
            pool.stop()
        mock.stop()
