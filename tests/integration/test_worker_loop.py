"""A worker's event loop hands its round trips to timers and job threads (workers.event_flush,
workers.thread_acks); nothing it did before is lost: every message is acked in Redis, and Flower's
task events all arrive, in batches.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from llmpool.client import Client
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.settings import load_settings
from tests.processes import clean_env, start_worker, wait_for
from workers.config import celery_config

JOBS = 12
TASK_EVENTS = {"task-received", "task-started", "task-succeeded"}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockLLM]:
    with MockLLM(containers=[ContainerSpec(name="llm", ttft=0.05, tokens_per_second=500)]) as running:
        yield running


class EventLog:
    """Flower's view: every task event the worker publishes, by task id, read by a real Receiver."""

    def __init__(self, redis_url: str) -> None:
        self.app = Celery("test-events")
        self.app.conf.update(celery_config(load_settings(redis_url=redis_url)))
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.ready = threading.Event()
        self._receiver = None
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        with self.app.connection_for_read() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
            self.ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_event(self, event: dict) -> None:
        if event.get("uuid"):
            self.seen[event["uuid"]].add(event["type"])

    def __enter__(self) -> EventLog:
        self._thread.start()
        assert self.ready.wait(10), "the event receiver did not start"
        time.sleep(0.5)  # its fanout subscription is live before the jobs go out
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(5)


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_every_message_is_acked_and_every_task_event_arrives(tmp_path: Path, mock: MockLLM, pool: str) -> None:
    with RedisServer(data_dir=tmp_path / "redis", appendonly=False) as server:
        env = clean_env(redis_url=server.url, local_llm_host="127.0.0.1", local_llm_port=mock.port("llm"),
                        agent_backend_url=f"http://127.0.0.1:{free_port()}", agent_max_failures=10)
        worker = start_worker(tmp_path, env, concurrency=4, pool=pool, loglevel="WARNING")
        conn = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            with EventLog(server.url) as events, Client(server.url) as client:
                store = JobStore(client.redis, Keys(), ttl=600, stream_ttl=600)
                ids = [client.submit(f"hi {n}").job_id for n in range(JOBS)]
                for job_id in ids:
                    list(store.events(job_id, until=time.time() + 30))
                assert [(store.get(j) or {}).get("state") for j in ids] == ["succeeded"] * JOBS
                # acks are made by the jobs' threads: each reached Redis (kombu's unacked record is gone)
                wait_for(lambda: not conn.exists("unacked", "unacked_index"), timeout=10,
                         what="every message acked")
                wait_for(lambda: all(events.seen[j] >= TASK_EVENTS for j in ids), timeout=10,
                         what="received, started and succeeded events of every job")
            assert worker.alive(), worker.log_tail()
        finally:
            conn.close()
            worker.stop()
