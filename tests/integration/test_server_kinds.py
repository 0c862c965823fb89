"""Server kinds end to end: the real health pass on a llama.cpp server that reloads its model, the
real load pass routing a real worker's jobs to the less loaded vLLM replica, and a one-slot
llama.cpp server capped at one call (mock flavours over HTTP, a real Redis, real worker processes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from beat.tasks import run_discovery, run_health_pass, run_load_pass
from llmpool.admission import limits_for
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer
from llmpool.resources import Resources, _build
from llmpool.settings import load_settings
from tests.pool import Pool, start_pool
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(90)

MODEL = "org/Llama-3.1-8B-Instruct"


def _resources(redis_url: str, servers: list[str], **overrides: object) -> Resources:
    settings = load_settings(redis_url=redis_url, agent_openai_servers=",".join(servers), agent_auto_discovery=False,
                             agent_fallback_to_local=False, agent_health_check_timeout=2, **overrides)
    return _build(settings)


def test_a_llamacpp_server_reloading_its_model_is_starting_not_failing(redis_url: str) -> None:
    spec = ContainerSpec(name="cpp", flavor="llamacpp", hf_model_id="/models/tiny.Q8_0.gguf", slots=1)
    with MockLLM([spec], backend=False) as mock:
        res = _resources(redis_url, [mock.url("cpp")], agent_max_failures=2)
        try:
            found = run_discovery(res, force=True)
            [endpoint_id] = found["new"]
            assert found["current"] == endpoint_id
            endpoint = res.registry.snapshot().records[endpoint_id].endpoint
            assert (endpoint.kind, endpoint.slots) == ("llamacpp", 1)
            assert limits_for(endpoint, res.settings).max_concurrency == 1  # its one slot, learned

            mock.configure("cpp", loading=True)  # the server restarted and loads its model again
            for _ in range(4):  # twice AGENT_MAX_FAILURES passes
                passed = run_health_pass(res)
                assert passed["states"] == {endpoint_id: "starting"} and passed["current"] is None
            health = res.registry.snapshot().health[endpoint_id]
            assert (health.consecutive_failures, health.last_error) == (0, "loading model")

            mock.configure("cpp", loading=False)
            passed = run_health_pass(res)
            assert passed["states"] == {endpoint_id: "healthy"} and passed["current"] == endpoint_id
        finally:
            res.close()


@pytest.mark.parametrize(("prefer", "first"), [("quality", "Q8_0"), ("speed", "Q4_K_M")])
def test_ollama_quantizations_of_one_model_are_selected_as_agent_prefer_says(redis_url: str, prefer: str,
                                                                          first: str) -> None:
    specs = [ContainerSpec(name=f"oll-{q}", flavor="ollama", model_name=f"llama3.1:8b-instruct-{q.lower()}",
                           quantization=q) for q in ("Q4_K_M", "Q8_0")]
    with MockLLM(specs, backend=False) as mock:
        settings = load_settings(redis_url=redis_url, agent_auto_discovery=False, agent_fallback_to_local=False,
                                 agent_health_check_timeout=2, agent_prefer=prefer,
                                 agent_ollama_servers=",".join(mock.url(s.name) for s in specs))
        res = _build(settings)
        try:
            run_discovery(res, force=True)
            selection = res.registry.selection()
            assert selection is not None
            assert [(e.kind, e.quantization) for e in selection.order][0] == ("ollama", first)
            assert {e.quantization for e in selection.order} == {"Q4_K_M", "Q8_0"}
        finally:
            res.close()


@pytest.fixture
def pool_on(tmp_path: Path) -> Iterator:
    started: list[Pool] = []
    with RedisServer(data_dir=tmp_path / "redis") as server:
        def make(specs: list[ContainerSpec], **settings: object) -> tuple[Pool, Resources]:
            mock = MockLLM(specs).start()  # its backend lists them too, unread: auto discovery is off
            servers = [mock.url(s.name) for s in specs]
            try:
                pool = start_pool(tmp_path, server, mock, workers=1, threads=6, agent_auto_discovery="false",
                                  agent_openai_servers=",".join(servers), **settings)
            except BaseException:
                mock.stop()
                raise
            started.append(pool)
            # The load pass as beat would run it; its figures live long enough for the test's jobs.
            return pool, _resources(server.url, servers, agent_load_interval=30)

        try:
            yield make
        finally:
            for pool in started:
                pool.stop()
                pool.mock.stop()


def _answered_by(pool: Pool, job_ids: list[str]) -> list[str]:
    records = pool.finished(job_ids)
    assert [r["state"] for r in records] == ["succeeded"] * len(job_ids)
    return [r["result"]["endpoint"] for r in records]


def test_jobs_go_to_the_vllm_replica_with_the_shorter_queue(pool_on) -> None:
    specs = [ContainerSpec(name=name, flavor="vllm", hf_model_id=MODEL, ttft=0.0, tokens_per_second=0)
             for name in ("v1", "v2")]
    pool, res = pool_on(specs)
    try:
        ids = {name: f"openai:{pool.mock.url(name)}#{MODEL}" for name in ("v1", "v2")}
        worked: list[list[str]] = []
        for busy, idle in (("v1", "v2"), ("v2", "v1")):  # either way round: the figure decides
            pool.mock.configure(busy, external_running=6, external_waiting=3)  # other clients' queue
            pool.mock.configure(idle, external_running=0, external_waiting=0)
            loads = run_load_pass(res)
            assert loads["read"] == 2
            worked.append(loads["progressed"])
            answered = _answered_by(pool, pool.submit(8))
            assert answered == [ids[idle]] * 8
        # The second pass saw v2's token counter move (it answered the first 8): seen working.
        assert worked == [[], [ids["v2"]]]
    finally:
        res.close()


def test_a_one_slot_llamacpp_server_gets_one_call_at_a_time(pool_on) -> None:
    spec = ContainerSpec(name="cpp", flavor="llamacpp", hf_model_id="/models/tiny.Q4_K_M.gguf", slots=1,
                         ttft=0.2, tokens_per_second=0)
    pool, res = pool_on([spec])
    res.close()
    jobs: list[str] = []
    threads = [threading.Thread(target=lambda: jobs.extend(pool.submit(1))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(_answered_by(pool, jobs)) == 4
    stats = pool.mock.stats("cpp")
    # Our cap held the other three in admission: the server never had a call waiting in its queue.
    assert (stats["chat_requests"], stats["peak_in_flight"]) == (4, 1)


def test_a_job_meeting_a_llamacpp_server_loading_its_model_waits_and_charges_nothing(pool_on) -> None:
    """A chat call answered 503 "Loading model" pauses the server and the job waits: no failure on
    its breaker, not one of the job's calls; once loaded, the job is answered in one call."""
    spec = ContainerSpec(name="cpp", flavor="llamacpp", hf_model_id="/models/tiny.Q4_K_M.gguf", ttft=0.0,
                         tokens_per_second=0)
    pool, res = pool_on([spec], agent_job_max_calls=2)
    res.close()
    endpoint_id = f"openai:{pool.mock.url('cpp')}#/models/tiny.Q4_K_M.gguf"
    pool.mock.configure("cpp", loading=True)  # reloading: discovery and the health pass knew it loaded
    [job_id] = pool.submit(1)

    def refused_loading() -> int:
        return sum(1 for r in pool.mock.stats("cpp")["records"]
                   if r["path"] == "/v1/chat/completions" and r["status"] == 503)

    wait_for(lambda: refused_loading() >= 3, timeout=30, what="the worker's calls to meet the loading model")
    pool.mock.configure("cpp", loading=False)
    record = pool.finished([job_id])[0]
    assert record["state"] == "succeeded" and record["calls"] == 1, record  # more 503s than calls allowed
    assert not [e for e in record["history"] if e["event"] == "call_failed"], record["history"]
    assert pool.admitter.stats([endpoint_id])[endpoint_id]["failures"] == 0
