"""The beat tasks' passes, run in-process against a real Redis and the mock backend over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from beat.schedule import beat_schedule
from beat.tasks import run_discovery, run_health_pass
from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.resources import Resources, SelectionCache, _build
from llmpool.settings import Settings, load_settings


@pytest.fixture(scope="module")
def mock() -> Iterator[MockLLM]:
    with MockLLM(containers=[ContainerSpec(name="c1", model_name="Llama-3.1-8B-Instruct")]) as running:
        yield running


def resources(redis_url: str, mock: MockLLM, **overrides: object) -> Resources:
    settings = load_settings(redis_url=redis_url, agent_backend_url=mock.backend_url,
                             agent_fallback_to_local=False, agent_health_check_timeout=1, **overrides)
    return _build(settings)


def test_a_held_lock_makes_a_second_pass_skip(redis_url: str, mock: MockLLM) -> None:
    res = resources(redis_url, mock)
    with res.redis.lock(res.keys.lock("discovery"), timeout=30):
        assert run_discovery(res, force=True) == {"skipped": "another discovery pass is running"}
    with res.redis.lock(res.keys.lock("health"), timeout=30):
        assert run_health_pass(res) == {"skipped": "another health pass is running"}
    assert run_discovery(res, force=True)["current"] == deploy_id("c1")


def test_discovery_runs_when_due_and_probes_what_is_new(redis_url: str, mock: MockLLM) -> None:
    res = resources(redis_url, mock)
    first = run_discovery(res)
    assert first["reason"] == "first pass" and first["new"] == [deploy_id("c1")]
    assert first["current"] == deploy_id("c1")  # probed at once: selectable without waiting for beat
    assert run_discovery(res) == {"skipped": "ran recently"}
    assert run_discovery(res, force=True)["reason"] == "forced"


def test_polling_gives_up_after_the_configured_attempts(redis_url: str, mock: MockLLM) -> None:
    res = resources(redis_url, mock, agent_auto_discovery=False, agent_llm_polling_interval=0.001,
                    agent_llm_polling_max_attempts=2)
    assert run_discovery(res)["current"] is None
    assert run_discovery(res)["current"] is None
    assert run_discovery(res)["skipped"].startswith("LLM polling gave up after 2 attempts")
    assert run_discovery(res, force=True)["reason"] == "forced"


def test_health_checks_off_skip_probes_and_select_unprobed_endpoints(redis_url: str, mock: MockLLM) -> None:
    res = resources(redis_url, mock, agent_health_check_enabled=False)
    assert run_health_pass(res) == {"skipped": "AGENT_HEALTH_CHECK_ENABLED is false"}
    result = run_discovery(res)
    assert result["current"] == deploy_id("c1")
    assert res.registry.snapshot().health == {}  # nothing was probed


def test_health_pass_records_latency_and_errors(redis_url: str, mock: MockLLM) -> None:
    res = resources(redis_url, mock, agent_max_failures=1)
    run_discovery(res)
    mock.set_fault("c1", "error500")
    try:
        result = run_health_pass(res)
    finally:
        mock.set_fault("c1", "none")
    assert result["states"] == {deploy_id("c1"): "unhealthy"} and result["current"] is None
    health = res.registry.snapshot().health[deploy_id("c1")]
    assert health.last_error and "500" in health.last_error and health.latency is not None


def test_the_selection_cache_reads_redis_at_most_once_a_second(redis_url: str, mock: MockLLM) -> None:
    res = resources(redis_url, mock)
    run_discovery(res)
    reads = []
    original = res.registry.selection

    def counted() -> object:
        reads.append(1)
        return original()

    res.registry.selection = counted  # type: ignore[method-assign]
    cache = SelectionCache(res.registry, ttl=60)
    for _ in range(100):
        selection = cache.get()
    assert selection is not None and selection.current is not None and len(reads) == 1
    cache.invalidate()
    cache.get()
    assert len(reads) == 2


@pytest.mark.parametrize("values", [{}, {"agent_health_check_interval": 12, "agent_discovery_interval": 300,
                                         "agent_llm_polling_interval": 90}])
def test_every_periodic_task_runs_on_control_and_expires_before_its_next_run(values: dict) -> None:
    schedule = beat_schedule(Settings(**values))
    assert set(schedule) == {"llmpool-discovery", "llmpool-health", "llmpool-load", "llmpool-redis-memory"}
    for entry in schedule.values():
        assert entry["options"]["queue"] == "control"
        assert 0 < entry["options"]["expires"] < entry["schedule"]
    if values:
        assert schedule["llmpool-discovery"]["schedule"] == 90  # polling is more frequent than discovery
    assert "llmpool-health" not in beat_schedule(Settings(agent_health_check_enabled=False))
    assert "llmpool-load" not in beat_schedule(Settings(agent_load_interval=0))
