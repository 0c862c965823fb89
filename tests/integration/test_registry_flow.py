"""Discovery, health checks and selection on real parts: beat, a worker, the API, the mock backend."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from tests.processes import ManagedProcess, clean_env, start_api, start_beat, start_worker, wait_for

MAX_FAILURES = 2
RECOVERY = 2
HEALTH_EVERY = 0.5
CONTAINERS = [
    ContainerSpec(name="llm-8b", model_name="Llama-3.1-8B-Instruct", ttft=0.01, tokens_per_second=500),
    ContainerSpec(name="llm-70b", model_name="Llama-3.1-70B-Instruct", ttft=0.01, tokens_per_second=500),
    ContainerSpec(name="llm-mistral", model_name="Mistral-7B-Instruct-v0.3", ttft=0.01, tokens_per_second=500),
    ContainerSpec(name="embedder", model_name="bge-large", model_type="embedding"),
]
ID = {c.name: deploy_id(c.name) for c in CONTAINERS}


@dataclass
class Stack:
    api: str
    mock: MockLLM
    tmp: Path
    env: dict[str, str]
    worker: ManagedProcess

    def status(self) -> dict[str, Any]:
        return httpx.get(self.api + "/status", timeout=5).json()

    def current(self) -> str | None:
        llm = self.status()["current_llm"]
        return llm["deploy_id"] if llm else None

    def wait_current(self, expected: str | None, timeout: float = 20) -> float:
        started = time.monotonic()
        wait_for(lambda: self.current() == expected, timeout=timeout, what=f"selection {expected}")
        return time.monotonic() - started

    def row(self, deploy: str) -> dict[str, Any]:
        return next(r for r in self.status()["available_models"] if r["deploy_id"] == deploy)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("registry")
    (tmp / ".env").write_text("AGENT_PRIORITY_MODELS=llama-3.1-70b,llama-3.1-8b,mistral-7b\n")
    with RedisServer(data_dir=tmp / "redis") as server, MockLLM(containers=CONTAINERS) as mock:
        env = clean_env(
            redis_url=server.url, agent_backend_url=mock.backend_url, agent_fallback_to_local="false",
            agent_discovery_interval=1, agent_discovery_cache_ttl=0.5, agent_health_check_interval=HEALTH_EVERY,
            agent_health_check_timeout=1, agent_max_failures=MAX_FAILURES,
            agent_health_recovery_successes=RECOVERY, agent_discovery_grace_period=2,
        )
        procs: list[ManagedProcess] = []
        try:
            procs.append(worker := start_worker(tmp, env, concurrency=8))
            procs.append(start_beat(tmp, env))
            api_proc, url = start_api(tmp, env)
            procs.append(api_proc)
            yield Stack(api=url, mock=mock, tmp=tmp, env=env, worker=worker)
        finally:
            for proc in reversed(procs):
                proc.stop()


@pytest.fixture(autouse=True)
def all_healthy(stack: Stack) -> Iterator[None]:
    yield
    for name in ("llm-8b", "llm-70b", "llm-mistral"):
        stack.mock.set_fault(name, "none")
    stack.mock.set_backend_fault("none")
    httpx.delete(stack.api + "/select_model", timeout=5)
    stack.wait_current(ID["llm-70b"], timeout=30)


def test_discovery_finds_chat_models_ranked_by_priority(stack: Stack) -> None:
    stack.wait_current(ID["llm-70b"])
    status = stack.status()
    assert status["status"] == "ready"
    rows = status["available_models"]
    assert [r["container_name"] for r in rows] == ["llm-70b", "llm-8b", "llm-mistral"]  # no embedder
    assert [r["rank"] for r in rows] == [0, 1, 2] and rows[0]["is_current"]
    assert rows[0]["internal_url"].startswith("http://127.0.0.1:")
    assert status["discovery_summary"]["healthy"] == 3
    root = httpx.get(stack.api + "/", timeout=5).json()
    assert root["status"] == "ready" and root["llm_info"] == "Discovered: Llama-3.1-70B-Instruct"


def test_a_job_runs_on_the_selected_endpoint(stack: Stack) -> None:
    resp = httpx.post(stack.api + "/poll_requests", json={"message": "hi"}, timeout=30,
                      headers={"Accept": "application/json"})
    assert resp.status_code == 200 and resp.json()["answer"].startswith("Hello from llm-70b!")
    assert resp.json()["endpoint"] == ID["llm-70b"]


def refresh(stack: Stack, part: str) -> dict[str, Any]:
    """POST /refresh until its `part` ("discovery" or "health") ran: beat's own pass may hold its lock."""
    bodies: list[dict[str, Any]] = []

    def ran() -> bool:
        resp = httpx.post(stack.api + "/refresh", timeout=90)
        assert resp.status_code == 200, resp.text
        bodies.append(resp.json())
        return "skipped" not in bodies[-1]["details"][part]

    wait_for(ran, timeout=30, what=f"a /refresh whose {part} pass ran")
    return bodies[-1]


def _good_probes_between(stack: Stack, name: str, start: float, end: float) -> int:
    records = stack.mock.stats(name)["records"]
    return sum(1 for r in records if r["path"] == "/health" and start <= r["time"] < end and r["status"] == 200)


def test_a_dead_endpoint_loses_the_selection_and_wins_it_back_with_hysteresis(stack: Stack) -> None:
    stack.wait_current(ID["llm-70b"])
    stack.mock.set_fault("llm-70b", "refuse")
    moved_after = stack.wait_current(ID["llm-8b"])
    row = stack.row(ID["llm-70b"])
    assert row["status"] == "unhealthy" and row["consecutive_failures"] >= MAX_FAILURES
    assert "connect" in (row["last_error"] or "").lower()
    cleared = time.time()
    stack.mock.set_fault("llm-70b", "none")
    back_after = stack.wait_current(ID["llm-70b"])
    seen_back = time.time()
    # Hysteresis: it came back only after RECOVERY good probes, not after the first one.
    assert _good_probes_between(stack, "llm-70b", cleared, seen_back) >= RECOVERY
    print(f"\nselection moved {moved_after:.2f}s after the death, came back {back_after:.2f}s after recovery "
          f"(health every {HEALTH_EVERY}s, {MAX_FAILURES} failures, {RECOVERY} successes)")


def test_select_model_pins_and_unpins(stack: Stack) -> None:
    stack.wait_current(ID["llm-70b"])
    resp = httpx.post(stack.api + "/select_model", params={"deploy_id": ID["llm-mistral"]}, timeout=5)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success" and body["new_model"] == "Mistral-7B-Instruct-v0.3"
    assert body["old_model"] == "Llama-3.1-70B-Instruct" and body["model_info"]["status"] == "healthy"
    time.sleep(HEALTH_EVERY * 3)  # health passes and discovery run meanwhile: the pin holds
    assert stack.current() == ID["llm-mistral"] and stack.status()["pinned"] == ID["llm-mistral"]
    unpinned = httpx.delete(stack.api + "/select_model", timeout=5).json()
    assert unpinned["new_model"] == "Llama-3.1-70B-Instruct"
    by_body = httpx.post(stack.api + "/select_model", json={"deploy_id": ID["llm-8b"]}, timeout=5)
    assert by_body.status_code == 200 and stack.current() == ID["llm-8b"]


def test_a_pin_is_dropped_when_its_endpoint_dies(stack: Stack) -> None:
    assert httpx.post(stack.api + "/select_model", params={"deploy_id": ID["llm-8b"]}, timeout=5).status_code == 200
    stack.mock.set_fault("llm-8b", "refuse")
    stack.wait_current(ID["llm-70b"])
    assert stack.status()["pinned"] is None
    stack.mock.set_fault("llm-8b", "none")
    time.sleep(HEALTH_EVERY * (RECOVERY + 3))
    assert stack.current() == ID["llm-70b"]  # recovery does not bring the old pin back


def test_select_model_errors(stack: Stack) -> None:
    unknown = httpx.post(stack.api + "/select_model", params={"deploy_id": "nope"}, timeout=5)
    assert unknown.status_code == 404
    assert unknown.json()["message"] == "Model with deploy_id nope not found"
    assert {m["container_name"] for m in unknown.json()["available_models"]} == {"llm-70b", "llm-8b", "llm-mistral"}
    stack.mock.set_fault("llm-mistral", "refuse")
    wait_for(lambda: stack.row(ID["llm-mistral"])["status"] == "unhealthy", timeout=20, what="mistral unhealthy")
    sick = httpx.post(stack.api + "/select_model", params={"deploy_id": ID["llm-mistral"]}, timeout=5)
    assert sick.status_code == 409
    assert sick.json()["message"] == "Model Mistral-7B-Instruct-v0.3 is unhealthy (status: unhealthy)"
    assert httpx.post(stack.api + "/select_model", timeout=5).status_code == 422
    assert httpx.post(stack.api + "/select_model", json={"deploy_id": ""}, timeout=5).status_code == 422


def test_hung_containers_do_not_slow_the_health_pass(stack: Stack) -> None:
    hung = ("llm-mistral", "llm-8b")
    for name in hung:
        stack.mock.set_fault(name, "hang")  # until the prober leaves: an hour (hang_cap) if it waited
    try:
        health = refresh(stack, "health")["details"]["health"]
        rows = {name: stack.row(ID[name]) for name in (*hung, "llm-70b")}
    finally:
        for name in hung:
            stack.mock.set_fault(name, "none")
    assert health["probed"] == 3 and health["states"][ID["llm-70b"]] == "healthy"
    for name in hung:  # each hung probe gave up at its timeout and was counted as a failure
        assert "timed out" in (rows[name]["last_error"] or "") and rows[name]["consecutive_failures"] >= 1, rows[name]
    # The probes ran at once: the pass took less than the hung probes would have one after another.
    # Both sides are measured on this machine, so a loaded machine stretches both.
    one_after_another = sum(rows[name]["latency"] for name in hung)
    assert health["duration"] < one_after_another, (health["duration"], one_after_another)
    print(f"\nhealth pass with {len(hung)} hung containers: {health['duration']:.2f}s "
          f"(their probes: {one_after_another:.2f}s one after another)")
    # The next tests need every container healthy again (RECOVERY good probes).
    wait_for(lambda: all(stack.row(ID[name])["status"] == "healthy" for name in hung), timeout=30,
             what="the hung containers to recover")


def test_refresh_reports_old_and_new_selection(stack: Stack) -> None:
    resp = httpx.post(stack.api + "/refresh", timeout=90)
    assert resp.status_code == 200
    body = resp.json()
    assert body["message"] == "LLM refreshed successfully"
    assert body["new_model"] == "Llama-3.1-70B-Instruct"
    assert {m["model_name"] for m in body["available_models"]} == {
        "Llama-3.1-70B-Instruct", "Llama-3.1-8B-Instruct", "Mistral-7B-Instruct-v0.3"}


def test_a_backend_outage_keeps_the_registry(stack: Stack) -> None:
    for fault in ("error500", "bad_json"):
        stack.mock.set_backend_fault(fault)
        body = refresh(stack, "discovery")
        assert "backend" in body["details"]["discovery"]["failed_sources"]
        assert len(stack.status()["available_models"]) == 3
        assert stack.current() == ID["llm-70b"]


def test_a_stream_cut_after_tokens_restarts_elsewhere_and_tells_the_reader(stack: Stack) -> None:
    stack.mock.configure("llm-70b", tokens_per_second=10)  # slow enough that the first tokens are sent on
    stack.mock.set_fault("llm-70b", "drop_mid_stream", requests=1)
    try:
        with httpx.stream("POST", stack.api + "/poll_requests", json={"message": "cut me"}, timeout=30) as resp:
            text = "".join(resp.iter_text())
    finally:
        stack.mock.configure("llm-70b", tokens_per_second=500)
    partial, rest = text.split("\n[RESET]\n")
    assert partial and "Hello from llm-70b!".startswith(partial)
    answer, stats = rest.split("[STATS]")
    assert answer == "Hello from llm-8b! You said: cut me"  # the next endpoint, from the start
    row = stack.row(ID["llm-70b"])
    assert row["breaker"]["failures"] >= 1 and row["breaker"]["state"] == "closed"


def test_test_llm_makes_a_one_token_call(stack: Stack) -> None:
    before = stack.mock.stats("llm-70b")["chat_requests"]
    body = httpx.get(stack.api + "/test_llm", timeout=10).json()
    assert body["connection_test"] is True and body["http_status"] == 200
    assert body["llm_info"] == "Discovered: Llama-3.1-70B-Instruct"
    assert stack.mock.stats("llm-70b")["chat_requests"] == before + 1
    assert stack.mock.stats("llm-70b")["last_body"]["max_tokens"] == 1


def test_refresh_config_rereads_settings_in_api_and_workers(stack: Stack) -> None:
    (stack.tmp / ".env").write_text("AGENT_PRIORITY_MODELS=mistral-7b,llama-3.1-70b\n")
    try:
        body = httpx.post(stack.api + "/refresh_config", timeout=10).json()
        assert body["current_config"]["priority_models"] == ["mistral-7b", "llama-3.1-70b"]
        assert body["workers_reloaded"] == 1
        stack.wait_current(ID["llm-mistral"])
        # the worker now ranks with the new list too: its next pass keeps mistral first
        time.sleep(HEALTH_EVERY * 3)
        assert stack.current() == ID["llm-mistral"]
    finally:
        (stack.tmp / ".env").write_text("AGENT_PRIORITY_MODELS=llama-3.1-70b,llama-3.1-8b,mistral-7b\n")
        httpx.post(stack.api + "/refresh_config", timeout=10)


def test_llmpool_status_prints_the_registry(stack: Stack) -> None:
    run = subprocess.run([sys.executable, "-m", "llmpool.cli", "status"], env=stack.env, cwd=stack.tmp,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"selected: {ID['llm-70b']} (Llama-3.1-70B-Instruct)"
    current = [line for line in lines if line.startswith("*")]
    assert len(current) == 1 and "Llama-3.1-70B-Instruct" in current[0] and "healthy" in current[0]


