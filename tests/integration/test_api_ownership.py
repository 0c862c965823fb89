"""With auth on, threads and jobs belong to the token's sub; and no secret or token leaks anywhere.

One stack for the module: Redis, the mock LLM (one container that demands the cloud token as its
bearer), Flower with basic auth, a worker and the API under uvicorn, with JWT_SECRET,
CLOUD_CHAT_UI_AUTH_TOKEN, AGENT_API_JWT_SECRET and AGENT_FLOWER_BASIC_AUTH all set and JSON logs at
DEBUG. Alice and Bob chat on the same thread_id; then every log, /status, the job records (raw in
Redis and through the API) and Flower's task views are searched for each secret and token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import redis as redis_lib

from llmpool.auth import tt_studio_jwt
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer
from llmpool.keys import Keys
from llmpool.registry import Registry
from tests.conftest import require_redis_binary
from tests.processes import ManagedProcess, clean_env, start_api, start_flower, start_worker, wait_for

JWT_SECRET = "tt-jwt-secret-nobody-may-see-4471"
CLOUD_TOKEN = "cloud-token-nobody-may-see-8812"
API_SECRET = "api-jwt-secret-nobody-may-see-0035-padding"
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-pw-nobody-may-see-2209"
THREAD = "shared-thread-1"


def _token(subject: str) -> str:
    return jwt.encode({"sub": subject, "exp": int(time.time()) + 600}, API_SECRET, algorithm="HS256")


@dataclass
class Stack:
    mock: MockLLM
    redis: redis_lib.Redis
    procs: list[ManagedProcess]
    api_url: str
    flower_url: str
    alice: str
    bob: str

    def chat(self, token: str, message: str, **extra: Any) -> httpx.Response:
        headers = {"Accept": "application/json", "Authorization": f"Bearer {token}", **extra.pop("headers", {})}
        return httpx.post(f"{self.api_url}/poll_requests", json={"message": message, **extra},
                          headers=headers, timeout=60)

    def get(self, path: str, token: str) -> httpx.Response:
        return httpx.get(self.api_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def messages_sent(self) -> int:
        """How many messages the LLM got in its last request (the thread's memory plus the new turn)."""
        return len(self.mock.stats("only")["last_body"]["messages"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_redis_binary()
    tmp = tmp_path_factory.mktemp("ownership")
    containers = [ContainerSpec(name="only", model_name="Llama-3.1-8B-Instruct", token=CLOUD_TOKEN, ttft=0.01)]
    with RedisServer(data_dir=tmp / "redis") as server, MockLLM(containers=containers) as mock:
        env = clean_env(
            redis_url=server.url, agent_backend_url=mock.backend_url, agent_fallback_to_local="false",
            jwt_secret=JWT_SECRET, cloud_chat_ui_auth_token=CLOUD_TOKEN, agent_api_jwt_secret=API_SECRET,
            agent_flower_basic_auth=f"{FLOWER_USER}:{FLOWER_PASSWORD}", agent_log_format="json",
            agent_debug_mode="true", agent_health_check_interval=3600, agent_discovery_interval=3600,
            agent_connect_timeout=2, agent_request_timeout=20)
        procs: list[ManagedProcess] = []
        client = redis_lib.Redis.from_url(server.url)
        try:
            flower, flower_url = start_flower(tmp, env)
            procs.append(flower)
            procs.append(start_worker(tmp, env, name="w1", concurrency=4))
            api, api_url = start_api(tmp, env)
            procs.append(api)
            registry = Registry(client, Keys())
            wait_for(lambda: (s := registry.selection()) is not None and len(s.order) == 1,
                     timeout=30, what="the container selected")
            yield Stack(mock=mock, redis=client, procs=procs, api_url=api_url, flower_url=flower_url,
                        alice=_token("alice"), bob=_token("bob"))
        finally:
            for proc in reversed(procs):
                proc.stop()
            client.close()


@pytest.fixture(scope="module")
def chats(stack: Stack) -> dict[str, Any]:
    """Alice takes two turns on THREAD, then Bob one on the same thread_id and her idempotency key."""
    first = stack.chat(stack.alice, "alice one", thread_id=THREAD, headers={"Idempotency-Key": "k-1"})
    alone = stack.messages_sent()
    second = stack.chat(stack.alice, "alice two", thread_id=THREAD)
    remembered = stack.messages_sent()
    bobs = stack.chat(stack.bob, "bob one", thread_id=THREAD, headers={"Idempotency-Key": "k-1"})
    bob_sent = stack.messages_sent()
    for response in (first, second, bobs):
        assert response.status_code == 200, response.text
    return {"alice": [first.json(), second.json()], "bob": bobs.json(), "alone": alone,
            "remembered": remembered, "bob_sent": bob_sent}


def test_another_subjects_thread_is_a_different_empty_thread(chats: dict[str, Any]) -> None:
    assert chats["remembered"] == chats["alone"] + 2  # Alice's second turn carried her first
    assert chats["bob_sent"] == chats["alone"]  # Bob's turn on the same thread_id carried nothing of hers


def test_another_subjects_job_is_a_404_the_owners_is_not(stack: Stack, chats: dict[str, Any]) -> None:
    alice_job, bob_job = chats["alice"][0]["job_id"], chats["bob"]["job_id"]
    assert alice_job != bob_job  # the same Idempotency-Key named a job of each subject's own
    assert chats["bob"]["answer"] and chats["bob"]["answer"] != chats["alice"][0]["answer"]
    mine = stack.get(f"/jobs/{alice_job}", stack.alice)
    assert mine.status_code == 200 and mine.json()["owner"] == "alice"
    for path in (f"/jobs/{alice_job}", f"/jobs/{alice_job}/events"):
        theirs = stack.get(path, stack.bob)
        assert theirs.status_code == 404, (path, theirs.text)
    cancel = httpx.delete(f"{stack.api_url}/jobs/{alice_job}", headers={"Authorization": f"Bearer {stack.bob}"},
                          timeout=30)
    assert cancel.status_code == 404
    assert stack.get(f"/jobs/{alice_job}", stack.alice).json()["state"] == "succeeded"


def _secrets(stack: Stack) -> dict[str, str]:
    return {"JWT_SECRET": JWT_SECRET, "the TT-Studio JWT": tt_studio_jwt(JWT_SECRET),
            "CLOUD_CHAT_UI_AUTH_TOKEN": CLOUD_TOKEN, "AGENT_API_JWT_SECRET": API_SECRET,
            "AGENT_FLOWER_BASIC_AUTH": FLOWER_PASSWORD, "alice's token": stack.alice, "bob's token": stack.bob}


def _flower_task_views(stack: Stack, job_ids: list[str]) -> list[str]:
    auth = (FLOWER_USER, FLOWER_PASSWORD)

    def seen() -> bool:
        tasks = httpx.get(stack.flower_url + "/api/tasks", auth=auth, timeout=30).json()
        return all(tasks.get(j, {}).get("state") == "SUCCESS" for j in job_ids)

    wait_for(seen, timeout=30, what="Flower to see every chat", interval=0.5)
    pages = [httpx.get(stack.flower_url + "/api/tasks", auth=auth, timeout=30).text,
             httpx.get(stack.flower_url + "/tasks", auth=auth, timeout=30).text]
    for job_id in job_ids:
        page = httpx.get(f"{stack.flower_url}/task/{job_id}", auth=auth, timeout=30)
        assert page.status_code == 200 and job_id in page.text
        pages.append(page.text)
    return pages


def test_no_secret_or_token_in_logs_status_job_records_or_flower(stack: Stack, chats: dict[str, Any]) -> None:
    assert stack.mock.stats("only")["last_authorization"] == f"Bearer {CLOUD_TOKEN}"  # it was sent, where due
    job_ids = [a["job_id"] for a in chats["alice"]] + [chats["bob"]["job_id"]]
    places: dict[str, str] = {}
    for proc in stack.procs:
        places[f"{proc.name} log"] = proc.log_path.read_text(errors="replace")
        assert len(places[f"{proc.name} log"]) > 1000, proc.name  # it did log (at DEBUG)
    status = stack.get("/status", stack.alice)
    assert status.status_code == 200 and status.json()["configuration"]["agent_api_jwt_secret"] == "***"
    places["/status"] = status.text
    for job_id in job_ids:
        raw = stack.redis.hgetall(Keys().job(job_id))
        assert raw, job_id
        places[f"record {job_id}"] = repr(raw) + repr(stack.redis.lrange(Keys().job_history(job_id), 0, -1))
        places[f"GET /jobs/{job_id}"] = stack.get(f"/jobs/{job_id}", stack.alice if job_id != job_ids[-1]
                                                  else stack.bob).text
    for n, page in enumerate(_flower_task_views(stack, job_ids)):
        places[f"flower view {n}"] = page
    leaks = [(name, where) for name, secret in _secrets(stack).items()
             for where, text in places.items() if secret in text]
    assert leaks == []
