"""A real stack for chaos tests: redis-server (AOF on), worker processes, the mock LLM, the Client.

Every job submitted is counted, and `ledger` says where each one ended: answered, failed with a
stated reason, or not finished. Each job's stream is read to check no answer was published twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpool.client import Client
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.jobs import FINAL_STATES, JobStore, decode_event
from llmpool.keys import Keys
from llmpool.redis_conn import sync_client
from tests.processes import ManagedProcess, clean_env, start_worker, wait_for

__all__ = ["Chaos", "Ledger", "open_chaos"]

# Short leases and sweeps, so recovery shows in seconds; the HTTP scenario keeps the defaults.
FAST_RECOVERY = {"agent_job_lease": 3, "agent_sweep_interval": 1, "agent_republish_after": 2,
                 "agent_visibility_timeout": 10}


@dataclass
class Ledger:
    answered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # job id -> error type
    unfinished: list[str] = field(default_factory=list)
    double_ends: list[str] = field(default_factory=list)  # more than one end event in a stream
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def recovered(self) -> list[str]:
        """Jobs the sweep handed back at least once (their worker died, or Redis lost them)."""
        return [j for j, h in self.histories.items() if any(e.get("event") == "lease_lapsed" for e in h)]

    def summary(self) -> str:
        return (f"answered={len(self.answered)} failed={dict(Counter(self.failed.values()))} "
                f"unfinished={len(self.unfinished)} double_ends={len(self.double_ends)} "
                f"recovered={len(self.recovered())}")


@dataclass
class Chaos:
    tmp: Path
    server: RedisServer
    mock: MockLLM
    env: dict[str, str]
    workers: list[ManagedProcess] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    redis_url: str = ""  # the workers' and the Client's REDIS_URL when not `server.url` (Sentinels)

    def __post_init__(self) -> None:
        url = self.redis_url or self.server.url
        self.client = Client(url)
        self.redis = sync_client(url, master_name=self.client.settings.agent_redis_master_name,
                                 socket_timeout=5, socket_connect_timeout=2)
        self.store = JobStore(self.redis, Keys(), ttl=600, stream_ttl=600)

    def worker(self, name: str, *, concurrency: int = 8, pool: str = "threads", **env: object) -> ManagedProcess:
        merged = {**self.env, **{k.upper(): str(v) for k, v in env.items()}}
        proc = start_worker(self.tmp, merged, name=name, concurrency=concurrency, loglevel="INFO", pool=pool)
        self.workers.append(proc)
        return proc

    def submit(self, n: int, **fields: Any) -> list[str]:
        ids = [self.client.submit(f"chaos {len(self.submitted) + i}", stream=True, **fields).job_id
               for i in range(n)]
        self.submitted += ids
        return ids

    def running_on(self, worker: ManagedProcess) -> int:
        hostname = worker.argv[worker.argv.index("-n") + 1]
        records = [self.store.get(j) or {} for j in self.submitted]
        return sum(1 for r in records if r.get("worker") == hostname and r.get("state") == "running")

    def wait_finished(self, timeout: float) -> float:
        """Seconds until every submitted job was final (raises after `timeout`)."""
        started = time.monotonic()
        try:
            wait_for(lambda: all((self.store.get(j) or {}).get("state") in FINAL_STATES for j in self.submitted),
                     timeout=timeout, what="every job to finish", interval=0.25)
        except TimeoutError as exc:
            records = {j: self.store.get(j) or {} for j in self.submitted}
            stuck = {j: (r.get("state"), r.get("claims"), r.get("history", [])[-3:])
                     for j, r in records.items() if r.get("state") not in FINAL_STATES}
            logs = "\n".join(f"--- {w.name}\n{w.log_tail(25)}" for w in self.workers)
            raise TimeoutError(f"{exc}; unfinished: {stuck}; sets: {self.store.counts()}\n{logs}") from None
        return time.monotonic() - started

    def ledger(self) -> Ledger:
        out = Ledger()
        for job_id in self.submitted:
            record = self.store.get(job_id) or {}
            out.histories[job_id] = record.get("history", [])
            ends = [e for _i, f in self.redis.xrange(self.store.stream_key(job_id))
                    if (e := decode_event(f)).get("type") == "end"]
            if len(ends) > 1:
                out.double_ends.append(job_id)
            state = record.get("state")
            if state == "succeeded":
                out.answered.append(job_id)
            elif state in FINAL_STATES:
                out.failed[job_id] = str((record.get("error") or {}).get("type"))
            else:
                out.unfinished.append(job_id)
        return out

    def close(self) -> None:
        for proc in self.workers:
            proc.stop()
        self.client.close()
        self.redis.close()


@contextmanager
def open_chaos(tmp: Path, *, llm_seconds: float, **settings: object) -> Iterator[Chaos]:
    """A Redis server (AOF on), one mock LLM answering after `llm_seconds` as the local LLM, and
    settings for the workers; every process is stopped on the way out."""
    spec = ContainerSpec(name="llm", ttft=llm_seconds, tokens_per_second=0)
    with RedisServer(data_dir=tmp / "redis") as server, MockLLM(containers=[spec]) as mock:
        env = clean_env(
            redis_url=server.url, local_llm_host="127.0.0.1", local_llm_port=mock.port("llm"),
            agent_backend_url=f"http://127.0.0.1:{free_port()}", agent_health_check_interval=3600,
            agent_connect_timeout=2, agent_first_token_timeout=30, agent_request_timeout=60, **settings,
        )
        rig = Chaos(tmp=tmp, server=server, mock=mock, env=env)
        try:
            yield rig
        finally:
            rig.close()
            server.stop()
