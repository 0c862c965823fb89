"""Flower as llmpool starts it, and what a worker, the API and Flower log, after chats that failed over.

One stack for the module: Redis, the mock LLM with two containers that demand the TT-Studio JWT,
Flower (workers.flower_app, basic auth from AGENT_FLOWER_BASIC_AUTH), a worker and the API, all
with JSON logs at DEBUG (AGENT_DEBUG_MODE: the most a log can say). Chats go through the API with a
message text nobody may log; the first container fails them, so the first jobs fail over and its
breaker opens. Then Flower's own REST API is read with and without the credentials, and every log
line is checked: job fields, each failover and the breaker's opening once, no text, no secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis as redis_lib

from llmpool.auth import tt_studio_jwt
from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from llmpool.keys import Keys
from llmpool.registry import Registry
from tests.conftest import require_redis_binary
from tests.processes import ManagedProcess, clean_env, start_api, start_flower, start_worker, wait_for
from workers.request import HIDDEN_RESULT

TEXT = "tangerine-zeppelin-7731"  # the message text: in the LLM's answer, in no log, nowhere in Flower
JWT_SECRET = "jwt-secret-that-nobody-may-log-9913"
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-pw-5521"
PRIMARY, BACKUP = deploy_id("primary"), deploy_id("backup")
MAX_FAILURES = 2
CHATS = 4
SUMMARY = "('<chat job: 1 messages, priority=default>',)"


@dataclass
class Stack:
    worker: ManagedProcess
    api: ManagedProcess
    flower: ManagedProcess
    flower_url: str
    node: str
    job_ids: list[str]
    answers: list[dict[str, Any]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_redis_binary()
    tmp = tmp_path_factory.mktemp("flower-logs")
    token = tt_studio_jwt(JWT_SECRET)
    containers = [ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", token=token, ttft=0.01),
                  ContainerSpec(name="backup", model_name="Llama-3.1-8B-Instruct", token=token, ttft=0.01)]
    with RedisServer(data_dir=tmp / "redis") as server, MockLLM(containers=containers) as mock:
        env = clean_env(
            redis_url=server.url, agent_backend_url=mock.backend_url, agent_fallback_to_local="false",
            jwt_secret=JWT_SECRET, agent_flower_basic_auth=f"{FLOWER_USER}:{FLOWER_PASSWORD}",
            agent_log_format="json", agent_debug_mode="true", agent_max_failures=MAX_FAILURES,
            agent_breaker_open_wait=600, agent_breaker_open_wait_max=600, agent_health_check_interval=3600,
            agent_discovery_interval=3600, agent_connect_timeout=2, agent_request_timeout=20)
        procs: list[ManagedProcess] = []
        redis = redis_lib.Redis.from_url(server.url)
        try:
            flower, flower_url = start_flower(tmp, env)  # first: Flower hears the worker come online
            procs.append(flower)
            worker = start_worker(tmp, env, name="w1", concurrency=4)
            procs.append(worker)
            api, api_url = start_api(tmp, env)
            procs.append(api)
            registry = Registry(redis, Keys())
            wait_for(lambda: (s := registry.selection()) is not None and [e.id for e in s.order] == [PRIMARY, BACKUP],
                     timeout=30, what="both containers selected, primary first")
            mock.set_fault("primary", "error500")
            answers = [httpx.post(f"{api_url}/poll_requests", json={"message": f"say {TEXT}"},
                                  headers={"Accept": "application/json"}, timeout=60).json() for _ in range(CHATS)]
            node = worker.argv[worker.argv.index("-n") + 1]
            yield Stack(worker=worker, api=api, flower=flower, flower_url=flower_url, node=node,
                        job_ids=[a.get("job_id", "") for a in answers], answers=answers)
        finally:
            for proc in reversed(procs):
                proc.stop()
            redis.close()


def _flower_get(stack: Stack, path: str, auth: tuple[str, str] | None) -> httpx.Response:
    return httpx.get(stack.flower_url + path, auth=auth, timeout=30)


def test_the_chats_failed_over_and_were_answered(stack: Stack):
    assert [a.get("status") for a in stack.answers] == ["succeeded"] * CHATS, stack.answers
    assert all(TEXT in a["answer"] and a["endpoint"] == BACKUP for a in stack.answers)


@pytest.mark.parametrize("path", ["/api/workers", "/api/tasks", "/tasks"])
def test_flower_opens_its_api_and_ui_to_the_credentials_only(stack: Stack, path: str):
    assert _flower_get(stack, path, None).status_code == 401
    assert _flower_get(stack, path, (FLOWER_USER, "wrong")).status_code == 401
    assert _flower_get(stack, path, (FLOWER_USER, FLOWER_PASSWORD)).status_code == 200
    assert _flower_get(stack, "/healthcheck", None).status_code == 200  # Flower's own exception (see README)


def test_flowers_rest_api_shows_the_worker_and_the_chats_by_summary(stack: Stack):
    auth = (FLOWER_USER, FLOWER_PASSWORD)
    workers = _flower_get(stack, "/api/workers?refresh=1", auth)
    assert stack.node in workers.json(), workers.text[:500]

    def all_succeeded() -> bool:
        shown = _flower_get(stack, "/api/tasks", auth).json()
        return all(shown.get(j, {}).get("state") == "SUCCESS" for j in stack.job_ids)

    wait_for(all_succeeded, timeout=30, what="Flower to see every chat succeed", interval=0.5)
    response = _flower_get(stack, "/api/tasks", auth)
    tasks = response.json()
    for job_id in stack.job_ids:
        task = tasks[job_id]
        assert (task["name"], task["args"], task["worker"]) == ("llmpool.chat", SUMMARY, stack.node)
        assert task["result"] == HIDDEN_RESULT.replace("{id}", job_id)
    assert TEXT not in response.text and TEXT not in workers.text


def _json_lines(proc: ManagedProcess) -> list[dict[str, Any]]:
    """The process's log lines that are JSON objects (Celery's start banner is not)."""
    lines = []
    for raw in proc.log_path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))  # a line that starts like JSON must be JSON
    return lines


def test_no_log_holds_the_message_text_or_a_secret(stack: Stack):
    secrets = [JWT_SECRET, tt_studio_jwt(JWT_SECRET), FLOWER_PASSWORD]
    for proc in (stack.worker, stack.api, stack.flower):
        text = proc.log_path.read_text(errors="replace")
        assert len(text) > 1000, proc.name  # it did log (at DEBUG)
        assert TEXT not in text, proc.name
        for secret in secrets:
            assert secret not in text, (proc.name, secret[:4])


def test_every_line_about_a_job_names_it_with_its_endpoint_and_attempt(stack: Stack):
    lines = _json_lines(stack.worker)
    assert lines and all(line["service"] == "worker" and line["node"] == stack.node for line in lines)
    for job_id in stack.job_ids:
        about = [line for line in lines if job_id in line["message"]]
        assert about, job_id
        assert all(line.get("job_id") == job_id for line in about), [ln for ln in about if ln.get("job_id") != job_id]
        succeeded = [line for line in about if "succeeded in" in line["message"]]
        assert [(line["endpoint"], line["attempt"]) for line in succeeded] == [(BACKUP, 1)]


def test_each_failover_and_the_breakers_opening_are_logged_once(stack: Stack):
    lines = _json_lines(stack.worker)
    failovers = [line for line in lines if line["message"].startswith("failover:")]
    # The first MAX_FAILURES chats each fail on the primary and move on; then its breaker is open.
    assert [line["job_id"] for line in failovers] == stack.job_ids[:MAX_FAILURES]
    assert all(line["level"] == "INFO" and line["endpoint"] == PRIMARY and line["attempt"] == 1
               and f"from {PRIMARY} to {BACKUP}" in line["message"] for line in failovers)
    opened = [line for line in lines if line["message"].startswith(f"breaker of {PRIMARY} opened")]
    assert [(line["level"], line["job_id"]) for line in opened] == [("WARNING", stack.job_ids[MAX_FAILURES - 1])]
