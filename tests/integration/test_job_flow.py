"""A chat job end to end on real parts: Redis, a Celery worker process, the mock LLM, the API."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import jwt
import pytest
import redis

from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.schemas import QUEUES
from llmpool.settings import Settings
from tests.processes import ManagedProcess, clean_env, start_api, start_worker, wait_for

SECRET = "integration-jwt-secret-0123456789abcdef"
EXPECTED_BEARER = "Bearer " + jwt.encode({"team_id": "tenstorrent", "token_id": "debug-test"}, SECRET,
                                         algorithm="HS256")
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass
class Stack:
    redis: redis.Redis
    mock: MockLLM
    worker: ManagedProcess
    api: str
    keys: Keys
    redis_url: str

    def post(self, body: object, *, json_mode: bool = True, timeout: float = 30,
             headers: dict[str, str] | None = None) -> httpx.Response:
        accept = {"Accept": "application/json"} if json_mode else {}
        return httpx.post(self.api + "/poll_requests", json=body, timeout=timeout,
                          headers={**accept, **(headers or {})})

    def llm_requests(self) -> int:
        """Chat completions the LLM was asked for (its health probes are not jobs)."""
        return int(self.mock.stats("llm-a")["chat_requests"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    spec = ContainerSpec(name="llm-a", model_name="Llama-3.1-8B-Instruct", hf_model_id=MODEL,
                         token=EXPECTED_BEARER.removeprefix("Bearer "), ttft=0.01,
                         tokens_per_second=400)
    with RedisServer(data_dir=tmp / "redis") as server, MockLLM(containers=[spec]) as mock:
        port = int(mock.url("llm-a").rsplit(":", 1)[1])
        env = clean_env(
            redis_url=server.url, local_llm_host="127.0.0.1", local_llm_port=port,
            local_model_name=MODEL, jwt_secret=SECRET,
            agent_backend_url=f"http://127.0.0.1:{free_port()}", agent_connect_timeout=2,
            agent_first_token_timeout=3, agent_request_timeout=10, agent_job_deadline=30,
        )
        worker = start_worker(tmp, env, concurrency=8)
        api_proc = None
        try:
            api_proc, url = start_api(tmp, env)
            client = redis.Redis.from_url(server.url)
            yield Stack(redis=client, mock=mock, worker=worker, api=url, keys=Keys(),
                        redis_url=server.url)
            client.close()
        finally:
            if api_proc is not None:
                api_proc.stop()
            worker.stop()


@pytest.fixture(autouse=True)
def healthy_mock(stack: Stack) -> Iterator[None]:
    stack.mock.set_fault("llm-a", "none")
    yield
    stack.mock.set_fault("llm-a", "none")


def test_json_answer_comes_from_the_llm(stack: Stack) -> None:
    resp = stack.post({"message": "Hello there", "thread_id": "json-1"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["answer"] == "Hello from llm-a! You said: Hello there"
    assert body["endpoint"] == "local" and body["model"] == MODEL
    assert body["usage"]["completion_tokens"] > 0 and body["timings"]["total"] > 0
    record = httpx.get(f"{stack.api}/jobs/{body['job_id']}", timeout=5).json()
    assert record["state"] == "succeeded" and record["attempts"] == 1
    assert record["result"]["content"] == body["answer"]


def test_text_stream_ends_with_tt_studio_stats(stack: Stack) -> None:
    with httpx.stream("POST", stack.api + "/poll_requests", timeout=30,
                      json={"message": "stream me please", "thread_id": "text-1"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        chunks = list(resp.iter_text())
    text = "".join(chunks)
    answer, stats = text.split("[STATS]")
    assert answer == "Hello from llm-a! You said: stream me please"
    assert json.loads(stats)["tokens_decoded"] == len(answer.split(" "))


def test_the_bearer_the_llm_receives_is_pyjwts_encoding(stack: Stack) -> None:
    assert stack.post({"message": "auth check"}).status_code == 200
    assert stack.mock.stats("llm-a")["last_authorization"] == EXPECTED_BEARER


@pytest.mark.parametrize("priority", ["high", "default", "low"])
def test_a_job_on_each_priority_queue(stack: Stack, priority: str) -> None:
    resp = stack.post({"message": f"prio {priority}", "priority": priority})
    assert resp.status_code == 200, resp.text
    record = httpx.get(f"{stack.api}/jobs/{resp.json()['job_id']}", timeout=5).json()
    assert record["queue"] == f"chat.{priority}" and record["state"] == "succeeded"


def test_unreachable_llm_gives_a_clear_failure_fast(stack: Stack) -> None:
    stack.mock.set_fault("llm-a", "refuse")
    started = time.monotonic()
    resp = stack.post({"message": "anyone there?"})
    elapsed = time.monotonic() - started
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert error["type"] == "all_endpoints_failed"
    assert "cannot connect to local" in error["message"]
    assert elapsed < 15  # bounded by the connect timeout, not the 30 s deadline
    record = httpx.get(f"{stack.api}/jobs/{resp.json()['job_id']}", timeout=5).json()
    assert record["state"] == "failed" and record["error"]["type"] == "all_endpoints_failed"


def test_llm_400_is_the_callers_error(stack: Stack) -> None:
    stack.mock.set_fault("llm-a", "error400")
    resp = stack.post({"message": "way too long"})
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "context_too_long"


def test_server_error_then_no_hang(stack: Stack) -> None:
    stack.mock.set_fault("llm-a", "error500")
    resp = stack.post({"message": "boom"})
    assert resp.status_code == 502 and "HTTP 500" in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [{}, {"message": ""}, {"message": 5}, {"thread_id": "x"}, {"message": "hi", "priority": "urgent"},
     {"message": "hi", "thread_id": "has space"}, {"message": "hi", "max_tokens": 0}, [1, 2], "text"],
)
def test_invalid_bodies_get_422_and_enqueue_nothing(stack: Stack, body: object) -> None:
    # Job records are made only at submit; other keys (memory, Celery results) may still be
    # landing from earlier tests, so they are not counted.
    jobs_before = len(stack.redis.keys(stack.keys.job("*")))
    resp = stack.post(body)
    assert resp.status_code == 422
    assert resp.json()["message"].startswith("Invalid request")
    assert len(stack.redis.keys(stack.keys.job("*"))) == jobs_before
    assert all(stack.redis.llen(q) == 0 for q in QUEUES)


def test_malformed_json_gets_400(stack: Stack) -> None:
    # Issue 10: a body that is not JSON is 400 (malformed_json); JSON with invalid fields stays 422.
    jobs_before = len(stack.redis.keys(stack.keys.job("*")))
    resp = httpx.post(stack.api + "/poll_requests", content=b"{not json",
                      headers={"Content-Type": "application/json"}, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "malformed_json"
    assert len(stack.redis.keys(stack.keys.job("*"))) == jobs_before


def test_thread_memory_is_per_thread(stack: Stack) -> None:
    assert stack.post({"message": "my name is Ada", "thread_id": "mem-1"}).status_code == 200
    assert stack.post({"message": "who am I?", "thread_id": "mem-1"}).status_code == 200
    sent = stack.mock.stats("llm-a")["last_body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == "my name is Ada" and sent[2]["content"] == "who am I?"
    assert stack.post({"message": "fresh", "thread_id": "mem-2"}).status_code == 200
    assert len(stack.mock.stats("llm-a")["last_body"]["messages"]) == 1


def test_idempotency_key_runs_the_job_once(stack: Stack) -> None:
    before = stack.llm_requests()
    first = stack.post({"message": "once"}, headers={"Idempotency-Key": "idem-1"})
    second = stack.post({"message": "once"}, headers={"Idempotency-Key": "idem-1"})
    assert first.status_code == second.status_code == 200
    assert first.json()["job_id"] == second.json()["job_id"] == "idem-1"
    assert stack.llm_requests() == before + 1


def test_a_retried_key_is_answered_from_the_record_after_the_stream_is_gone(stack: Stack) -> None:
    first = stack.post({"message": "remember me"}, headers={"Idempotency-Key": "idem-2"})
    assert first.status_code == 200
    stack.redis.delete(stack.keys.job_stream("idem-2"))  # as after AGENT_STREAM_TTL
    before = stack.llm_requests()
    again = stack.post({"message": "remember me"}, headers={"Idempotency-Key": "idem-2"}, timeout=10)
    assert again.status_code == 200 and again.json()["answer"] == first.json()["answer"]
    assert stack.llm_requests() == before
    stack.mock.set_fault("llm-a", "error400")
    failed = stack.post({"message": "bad"}, headers={"Idempotency-Key": "idem-3"})
    stack.mock.set_fault("llm-a", "none")
    stack.redis.delete(stack.keys.job_stream("idem-3"))
    replay = stack.post({"message": "bad"}, headers={"Idempotency-Key": "idem-3"}, timeout=10)
    assert failed.status_code == replay.status_code == 400
    assert replay.json()["error"]["type"] == "context_too_long"


def test_expired_job_never_calls_the_llm(stack: Stack) -> None:
    before = stack.llm_requests()
    resp = stack.post({"message": "too late", "timeout": 0.001})
    assert resp.status_code == 504
    assert resp.json()["error"]["type"] == "expired"
    assert stack.llm_requests() == before


def test_no_message_text_or_secret_in_worker_log_status_or_job_records(stack: Stack) -> None:
    marker = "purple-elephant-4242"
    resp = stack.post({"message": marker, "thread_id": "privacy-1"})
    assert resp.status_code == 200
    time.sleep(0.3)  # let the worker's log lines land
    log = stack.worker.log_tail(10_000)
    assert "llmpool.chat" in log  # the job was logged...
    assert marker not in log  # ...without its text or its answer
    status = httpx.get(stack.api + "/status", timeout=5).text
    for text in (log, status, json.dumps(httpx.get(f"{stack.api}/jobs/{resp.json()['job_id']}").json())):
        assert SECRET not in text and EXPECTED_BEARER.removeprefix("Bearer ") not in text


def test_status_reports_ready_with_workers_and_redacted_config(stack: Stack) -> None:
    status = httpx.get(stack.api + "/status", timeout=5).json()
    assert status["status"] == "ready" and status["workers"] == 1
    assert status["current_llm"]["deploy_id"] == "local"
    assert status["configuration"]["jwt_secret"] == "***"
    hedging = status["hedging"]  # on by default; an endpoint with no TTFT history waits the cold delay
    assert hedging["enabled"] is True and hedging["delays"] == {"local": hedging["cold_delay"]}
    root = httpx.get(stack.api + "/", timeout=5).json()
    assert root["status"] == "ready" and root["llm_mode"] == "local"


def test_unknown_job_is_404(stack: Stack) -> None:
    assert httpx.get(stack.api + "/jobs/nope", timeout=5).status_code == 404


# Keys that exist only while something is under way: a pass lock, kombu's unacked messages.
TRANSIENT = ("llmpool:lock:", "unacked")
# Keys of the pool itself, whatever jobs ran: Celery's and kombu's, and ours.
POOL_KEY = re.compile(r"^(llmpool:|_kombu\.binding|celery-task-meta-|unacked|chat\.|control$)")


def _settled(stack: Stack) -> bool:
    """No message unacked (every task has returned) and no job running."""
    return not stack.redis.exists("unacked", stack.keys.jobs_running())


def _keys(stack: Stack) -> set[str]:
    return {k.decode() for k in stack.redis.scan_iter("*") if not k.decode().startswith(TRANSIENT)}


def test_job_keys_left_behind_are_only_ours_and_expire(stack: Stack) -> None:
    """As arq's tests do: the exact set of keys one finished job leaves in Redis, each with its TTL."""
    wait_for(lambda: _settled(stack), timeout=20, what="earlier jobs to settle")
    before = _keys(stack)
    resp = stack.post({"message": "keys"})
    assert resp.status_code == 200, resp.text
    job_id = resp.json()["job_id"]
    wait_for(lambda: _settled(stack), timeout=20, what="the job to be acked")
    after = _keys(stack)
    k = stack.keys
    # The job record is the one stored answer: no Celery result (celery-task-meta-<id>) is kept.
    assert after - before == {k.job(job_id), k.job_stream(job_id), k.job_history(job_id)}
    assert before - after == set()  # and it took none away
    result_ttl = Settings.model_fields["agent_result_ttl"].default  # the worker runs on the defaults
    stream_ttl = Settings.model_fields["agent_stream_ttl"].default
    for key, longest in ((k.job(job_id), result_ttl), (k.job_history(job_id), result_ttl),
                         (k.job_stream(job_id), stream_ttl)):
        assert 0 < stack.redis.ttl(key) <= longest, key
    assert not stack.redis.exists(k.jobs_parked(), k.jobs_unpublished())  # no recovery entry is left either
    assert {key for key in after if not POOL_KEY.match(key)} == set()


def test_submit_from_python_with_the_client(stack: Stack) -> None:
    """A backend service submits with llmpool.Client and waits for the answer; no HTTP hop."""
    from llmpool import Client

    with Client(stack.redis_url) as client:
        submitted = client.submit("from python", priority="high")
        answer = client.result(submitted.job_id, timeout=20)
        record = client.record(submitted.job_id)
    assert submitted.created
    assert answer.content == "Hello from llm-a! You said: from python"
    assert answer.endpoint == "local"
    assert record is not None and record["state"] == "succeeded" and record["queue"] == "chat.high"


def test_a_plain_send_task_is_a_job_too(stack: Stack) -> None:
    """A service that only speaks Celery publishes `llmpool.chat` by name; the job still gets a record."""
    from celery import Celery

    from llmpool.client import producer_config
    from llmpool.settings import load_settings

    app = Celery("backend-service", set_as_current=False)
    app.conf.update(producer_config(load_settings(redis_url=stack.redis_url)))
    job_id = "plain-send-task"
    app.send_task("llmpool.chat", args=[{"messages": [{"role": "user", "content": "plain"}]}], task_id=job_id)
    store = JobStore(stack.redis, stack.keys, ttl=600, stream_ttl=600)
    events = list(store.events(job_id, until=time.time() + 20))
    assert events[-1]["state"] == "succeeded"
    assert events[-1]["data"]["content"] == "Hello from llm-a! You said: plain"
