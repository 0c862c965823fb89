"""How many Redis round trips of ours one chat job costs in a real worker (issue 12: at most 3).

A real redis-server behind a counting proxy (tests/redis_trips.py), a real Celery worker whose Redis
URL is the proxy, the mock LLM. Only the worker's own llmpool connections are counted (they name
themselves `llmpool-worker`); Celery's broker traffic and the test's client go uncounted.

A first run on a healthy endpoint, not streamed: claim + admit (job_start.lua), the first token
(first_token.lua), settle + finish + metrics (one pipeline). What else the worker sends while the
jobs run is time-driven, not per job: the lease thread's renewals and looks for cancelled jobs
(every 0.5 s while it holds jobs), the selection cache (once a second), heartbeats, the sweep. A
trip that names no job but writes what a job's run writes (metrics, breakers, leases, rates, TTFTs,
conversations) is counted against the jobs, so a split-off metrics write cannot hide.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from llmpool.client import Client
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.keys import Keys
from llmpool.registry import Registry
from llmpool.resources import WORKER_CLIENT_NAME
from tests.processes import clean_env, start_worker, wait_for
from tests.redis_trips import Trip, TripCounter, script_names

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
JOBS = 30
MOST_TRIPS_PER_JOB = 3
# Sent on a timer whatever the jobs do: the lease thread's renewals (its looks for cancelled jobs
# are pipelined HGETs of `state`), and redis-py's health check.
PERIODIC_SCRIPTS = {"job_renew", "lease_refresh", "PING"}
_k = Keys()
# Keys a job's run writes: a trip that names no job but touches one of these is counted against the
# jobs. The rest (selection, registry, heartbeats, queue depths, the sweep) is read on a timer.
PER_JOB_KEYS = tuple(key.removesuffix("X") for key in (
    _k.metric("X"), _k.breaker("X"), _k.breaker_trial("X"), _k.leases("X"), _k.rate("X", "rpm"),
    _k.rate("X", "tpm"), _k.pause("X"), _k.awaiting("X"), _k.ttft("X"), _k.conversation("X"), _k.server_load("X")))


def _periodic(trip: Trip, scripts: dict[str, str]) -> bool:
    names = trip.names(scripts)
    if all(name in PERIODIC_SCRIPTS for name in names):
        return True
    return all(name == "HGET" for name in names) and all(cmd[-1] == b"state" for cmd in trip.commands)


def _touches_per_job_keys(trip: Trip) -> bool:
    return any(arg.decode(errors="replace").startswith(PER_JOB_KEYS) for cmd in trip.commands for arg in cmd[1:])


@pytest.fixture
def worker_behind_proxy(tmp_path: Path) -> Iterator[tuple[TripCounter, Client]]:
    spec = ContainerSpec(name="llm-a", model_name="Llama-3.1-8B-Instruct", hf_model_id=MODEL, ttft=0.01,
                         tokens_per_second=2000)
    with RedisServer(data_dir=tmp_path / "redis") as server, MockLLM(containers=[spec]) as mock, \
            TripCounter(server.port, name_prefix=WORKER_CLIENT_NAME) as proxy:
        port = int(mock.url("llm-a").rsplit(":", 1)[1])
        env = clean_env(redis_url=proxy.url, local_llm_host="127.0.0.1", local_llm_port=port,
                        local_model_name=MODEL, agent_backend_url=f"http://127.0.0.1:{free_port()}",
                        agent_fallback_to_local="true", agent_health_check_interval=3600,
                        agent_discovery_interval=3600)
        worker = start_worker(tmp_path, env, concurrency=4, loglevel="WARNING")
        direct = redis.Redis.from_url(server.url)
        client = Client(server.url)
        try:
            registry = Registry(direct, Keys())
            wait_for(lambda: (s := registry.selection()) is not None and len(s.order) == 1, timeout=30,
                     what="the endpoint selected")
            for _ in range(3):  # warm: connections open, scripts loaded, the endpoint's TTFTs known
                client.result(client.submit("warm up").job_id, timeout=30)
            yield proxy, client
        finally:
            client.close()
            direct.close()
            worker.stop()


def test_a_first_run_on_a_healthy_endpoint_costs_at_most_three_round_trips(
        worker_behind_proxy: tuple[TripCounter, Client]) -> None:
    proxy, client = worker_behind_proxy
    proxy.counting = True
    job_ids = []
    for n in range(JOBS):  # one at a time, so each trip is plainly one job's
        job_id = client.submit(f"question {n}").job_id
        assert client.result(job_id, timeout=30).content
        job_ids.append(job_id)
    proxy.counting = False

    scripts = script_names()
    trips = proxy.taken()
    per_job = {job_id: [t for t in trips if t.mentions(job_id) and not _periodic(t, scripts)] for job_id in job_ids}
    unattributed = [t for t in trips if not any(t.mentions(j) for j in job_ids) and _touches_per_job_keys(t)]
    shapes = collections.Counter("+".join(t.names(scripts)[:3]) for ts in per_job.values() for t in ts)
    total = sum(len(ts) for ts in per_job.values()) + len(unattributed)
    report = (f"{total} trips for {JOBS} jobs; per job: {dict(shapes)}; "
              f"not naming a job: {[t.names(scripts)[:3] for t in unattributed]}")
    assert total <= MOST_TRIPS_PER_JOB * JOBS, report
    # Each job's trips are the three folded ones, so a split-up (or a fourth) trip shows by name.
    for job_id, ts in per_job.items():
        assert [t.names(scripts)[0] for t in ts] == ["job_start", "first_token", "settle"], (job_id, report)
        assert "job_finish" in ts[-1].names(scripts) and "HINCRBY" in ts[-1].names(scripts), report
