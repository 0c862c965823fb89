"""The control plane keeps its schedule under a chat backlog: the issue's scenario on real processes.

Redis, one chat worker whose two slots are held by slow LLM calls, the control worker, beat with a
3 s discovery interval and a 2 s health interval, and the mock LLM (its backend lists containers).
With 1,000 jobs queued, a container deployed meanwhile must be in the registry within the
discovery interval + 5 s, and health probes must keep their interval, while the backlog is still
there. Each chat call takes longer than that bound, so a control task that waited for a chat
slot (as it did before the control worker) would miss it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from llmpool.client import Client
from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from llmpool.keys import Keys
from llmpool.registry import Registry
from tests.processes import ManagedProcess, clean_env, start_beat, start_worker, wait_for

DISCOVERY_INTERVAL = 3.0
HEALTH_INTERVAL = 2.0
LLM_SECONDS = 20.0  # every chat call holds its slot far longer than the bound checked here
CHAT_SLOTS = 2
BACKLOG = 1000


@dataclass
class Plane:
    mock: MockLLM
    redis: redis.Redis
    registry: Registry
    client: Client
    control: ManagedProcess


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    llm = ContainerSpec(name="c1", model_name="Llama-3.1-8B-Instruct", ttft=LLM_SECONDS, tokens_per_second=0)
    with RedisServer(data_dir=tmp_path / "redis", appendonly=False) as server, MockLLM(containers=[llm]) as mock:
        env = clean_env(
            redis_url=server.url, agent_backend_url=mock.backend_url, agent_fallback_to_local="false",
            agent_discovery_interval=DISCOVERY_INTERVAL, agent_llm_polling_interval=DISCOVERY_INTERVAL,
            agent_discovery_cache_ttl=1, agent_health_check_interval=HEALTH_INTERVAL,
            agent_health_check_timeout=1, agent_first_token_timeout=60, agent_request_timeout=60,
            agent_shutdown_grace=1,
        )
        procs: list[ManagedProcess] = []
        client = Client(server.url)
        conn = redis.Redis.from_url(server.url)
        try:
            procs.append(start_worker(tmp_path, env, name="chat", concurrency=CHAT_SLOTS))  # -Q control,chat.*
            procs.append(start_worker(tmp_path, env, name="control", concurrency=4, queues="control"))
            procs.append(start_beat(tmp_path, env))
            registry = Registry(conn, Keys())
            wait_for(lambda: (s := registry.selection()) is not None and s.current is not None, timeout=30,
                     what="the first LLM to be selected")
            yield Plane(mock=mock, redis=conn, registry=registry, client=client, control=procs[1])
        finally:
            for proc in reversed(procs):
                proc.stop()
            client.close()
            conn.close()


def _last_check(plane: Plane, endpoint_id: str) -> float | None:
    health = plane.registry.snapshot().health.get(endpoint_id)
    return health.last_check if health else None


@pytest.mark.timeout(120)
def test_discovery_and_health_keep_their_schedule_under_a_1000_job_backlog(plane: Plane) -> None:
    for n in range(BACKLOG):
        plane.client.submit(f"backlog {n}", priority="low")
    wait_for(lambda: plane.mock.stats("c1")["in_flight"] == CHAT_SLOTS, timeout=20,
             what="every chat slot to be held by a slow call")

    plane.mock.add_container(ContainerSpec(name="c2", model_name="Llama-3.1-70B-Instruct"))
    deployed = time.monotonic()
    wait_for(lambda: deploy_id("c2") in plane.registry.snapshot().records, timeout=DISCOVERY_INTERVAL + 5,
             what="the container deployed during the backlog to be discovered")
    listed_after = time.monotonic() - deployed

    # Health probes keep their interval: sample the probe times of c1 for a few intervals.
    checks: set[float] = set()
    until = time.monotonic() + 4 * HEALTH_INTERVAL
    while time.monotonic() < until:
        if (at := _last_check(plane, deploy_id("c1"))) is not None:
            checks.add(at)
        time.sleep(0.2)
    gaps = [b - a for a, b in zip(sorted(checks), sorted(checks)[1:], strict=False)]

    assert plane.redis.llen("chat.low") >= BACKLOG - 2 * CHAT_SLOTS  # the backlog is still there
    assert plane.mock.stats("c1")["in_flight"] == CHAT_SLOTS  # and every chat slot still busy
    assert listed_after <= DISCOVERY_INTERVAL + 5
    assert len(checks) >= 3 and max(gaps) <= HEALTH_INTERVAL + 1.5, sorted(checks)
    assert deploy_id("c2") in plane.registry.snapshot().health  # the new one is probed too
    control_log = plane.control.log_path.read_text()
    assert "llmpool.control.health_check" in control_log and "llmpool.control.discover" in control_log
