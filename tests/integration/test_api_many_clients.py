"""The API under many clients, on real processes: Redis, a Celery worker, the mock LLM, uvicorn.

The issue's scenario: 1,000 `priority: low` chats whose clients give up, then 20 `priority: high`
chats one by one. Before the stream hub, each waiting client held a Redis connection of its own
and kept it after it had gone, and 14 of the 20 got `503 redis_unavailable` while Redis was idle.

The 1,000 clients are raw sockets (a request, then a read until the server closes), so the test
process stays light; they stream, as TT-Studio's clients do. The test raises its soft open-files
limit (children inherit it) when it is below what 1,000 connections on each side need.
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import pytest
import redis

from api.deps import API_CLIENT_NAME, PRODUCER_CONNECTIONS
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.keys import Keys
from tests.conftest import require_redis_binary
from tests.processes import ManagedProcess, clean_env, start_api, start_worker

# The mock answers after TTFT, then a token every 1/TOKENS_PER_SECOND: a high chat takes 0.5 s, and
# low chats of 6 to 17 tokens take 0.45 to 1 s, as real answers vary; equal ones would keep the
# worker's threads in lockstep, and a high chat would always wait out a whole low one.
TTFT, TOKENS_PER_SECOND = 0.2, 20.0
LOW_WORDS = 12
WORKER_THREADS = 4  # the low backlog drains at about 5 jobs/s: it is still there when the high chats come
ABANDONED = 1000
HIGH_CHATS = 20
IDLE_CHATS = 5
REDIS_CONNECTIONS = 16  # AGENT_API_REDIS_CONNECTIONS, below the default so that the bound shows
OPEN_FILES = 4096


FD_HEADROOM = 150  # open files the API and this process need besides one per waiting client
FEWEST_CLIENTS = 500  # below this the crowd would prove little: skip rather than run it


def ensure_open_files(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to `needed` (and the hard one, where allowed); the
    limit it has then, which the processes it starts inherit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
        return needed
    except (ValueError, OSError):  # a container may forbid raising the hard limit, even to root
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def crowd_size(open_files: int) -> int:
    """ABANDONED clients, or as many as the open-files limit allows (a 1024 hard limit: 874)."""
    size = min(ABANDONED, open_files - FD_HEADROOM)
    if size < FEWEST_CLIENTS:
        pytest.skip(f"{open_files} open files allow only {size} waiting clients")
    return size


@dataclass
class Stack:
    api: str
    api_proc: ManagedProcess
    mock: MockLLM
    redis: redis.Redis
    redis_port: int
    crowd: int  # how many low chats are abandoned: ABANDONED, unless the open-files limit is lower
    keys: Keys = field(default_factory=Keys)

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(self.api + "/status", timeout=10).json())

    def waiters(self) -> int:
        return int(self.status()["api"]["waiters"])

    def chat(self, message: str, **fields: Any) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = httpx.post(self.api + "/poll_requests", json={"message": message, **fields},
                              headers={"Accept": "application/json"}, timeout=60)
        return response, time.monotonic() - started

    def api_redis_connections(self) -> tuple[int, int]:
        """(connections named by the API's redis-py pools, every TCP connection of the API process to Redis)."""
        named = sum(1 for c in self.redis.client_list() if c.get("name") == API_CLIENT_NAME)
        every = sum(1 for c in psutil.Process(self.api_proc.pid).net_connections(kind="tcp")
                    if c.raddr and c.raddr.port == self.redis_port)
        return named, every

    def api_rss_mb(self) -> float:
        return psutil.Process(self.api_proc.pid).memory_info().rss / 2**20


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_redis_binary()
    crowd = crowd_size(ensure_open_files(OPEN_FILES))
    tmp = tmp_path_factory.mktemp("many-clients")
    spec = ContainerSpec(name="llm", ttft=TTFT, tokens_per_second=TOKENS_PER_SECOND)
    with RedisServer(data_dir=tmp / "redis") as server, MockLLM(containers=[spec]) as mock:
        env = clean_env(
            redis_url=server.url, local_llm_host="127.0.0.1", local_llm_port=mock.port("llm"),
            agent_backend_url=f"http://127.0.0.1:{free_port()}", agent_health_check_interval=3600,
            agent_connect_timeout=2, agent_first_token_timeout=10, agent_request_timeout=30,
            agent_api_redis_connections=REDIS_CONNECTIONS,
        )
        procs = [start_worker(tmp, env, concurrency=WORKER_THREADS)]
        client = redis.Redis.from_url(server.url)
        try:
            api_proc, url = start_api(tmp, env)
            procs.append(api_proc)
            yield Stack(api=url, api_proc=api_proc, mock=mock, redis=client, redis_port=server.port, crowd=crowd)
        finally:
            client.close()
            for proc in reversed(procs):
                proc.stop()


# --- raw streaming clients ---------------------------------------------------------------------

def _request(body: dict[str, Any], *, json_mode: bool = False, job_id: str | None = None) -> bytes:
    payload = json.dumps(body).encode()
    extra = ("Accept: application/json\r\n" if json_mode else "") + (f"Idempotency-Key: {job_id}\r\n" if job_id else "")
    head = (f"POST /poll_requests HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n{extra}\r\n")
    return head.encode() + payload


class Crowd:
    """Clients that post a chat each and read until the server closes; `abandon` hangs them all up."""

    def __init__(self, api: str) -> None:
        host, port = api.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.finished = 0  # answered in full before being abandoned

    async def join(self, body: dict[str, Any], *, json_mode: bool = False,
                   job_id: str | None = None) -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection(*self.address)
        writer.write(_request(body, json_mode=json_mode, job_id=job_id))
        await writer.drain()
        self.writers.append(writer)
        return reader

    async def _wait(self, reader: asyncio.StreamReader) -> None:
        await reader.read()  # until the server closes: the answer is complete
        self.finished += 1

    async def flood(self, bodies: list[dict[str, Any]], *, batch: int = 100) -> None:
        for start in range(0, len(bodies), batch):
            readers = await asyncio.gather(*(self.join(body) for body in bodies[start:start + batch]))
            self.tasks += [asyncio.create_task(self._wait(r)) for r in readers]

    async def abandon(self) -> None:
        for task in self.tasks:
            task.cancel()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _poll(check: Any, *, timeout: float, what: str, interval: float = 0.05) -> float:
    """Seconds until `check()` (a blocking call, run in a thread) was true; TimeoutError after `timeout`."""
    started = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - started


# --- the tests -----------------------------------------------------------------------------------

@pytest.mark.timeout(150)
def test_1000_abandoned_low_chats_leave_20_high_chats_their_idle_wait(stack: Stack) -> None:
    idle = [stack.chat(f"idle {i}", priority="high") for i in range(IDLE_CHATS)]
    assert [r.status_code for r, _ in idle] == [200] * IDLE_CHATS, idle[0][0].text
    idle_wait = statistics.mean(seconds for _, seconds in idle)
    rss_before = stack.api_rss_mb()

    async def flood_then_abandon() -> dict[str, Any]:
        crowd = Crowd(stack.api)
        await crowd.flood([{"message": "low" + " x" * (i % LOW_WORDS), "priority": "low"} for i in range(stack.crowd)])
        # every client is either waiting (the hub holds a waiter for it) or has its whole answer
        await _poll(lambda: stack.waiters() + crowd.finished == stack.crowd, timeout=60,
                    what="every low chat to be submitted and waiting")
        seen = {"waiting": stack.crowd - crowd.finished, "connections": stack.api_redis_connections(),
                "rss_mb": stack.api_rss_mb(), "open_files": psutil.Process(stack.api_proc.pid).num_fds()}
        await crowd.abandon()
        seen["freed_in"] = await _poll(lambda: stack.waiters() == 0, timeout=10, what="the abandoned waiters to go")
        return seen

    seen = asyncio.run(flood_then_abandon())
    try:
        backlog = stack.redis.llen(stack.keys.celery_queue("chat.low"))
        high = [stack.chat(f"high {i}", priority="high") for i in range(HIGH_CHATS)]
    finally:
        stack.redis.delete(stack.keys.celery_queue("chat.low"))  # the next test starts on an idle pool
    assert [r.status_code for r, _ in high] == [200] * HIGH_CHATS, [r.text for r, _ in high if r.status_code != 200]
    assert [r.json()["answer"] for r, _ in high] == [f"Hello from llm! You said: high {i}" for i in range(HIGH_CHATS)]
    high_wait = statistics.mean(seconds for _, seconds in high)
    named, every = seen["connections"]
    print(f"\n[many clients] idle high chat {idle_wait:.3f}s, after {stack.crowd} abandoned low chats "
          f"{high_wait:.3f}s mean / {max(s for _, s in high):.3f}s max (x{high_wait / idle_wait:.2f}); "
          f"{seen['waiting']} clients waiting at once: API Redis connections {named} named of "
          f"{REDIS_CONNECTIONS} allowed, {every} in all; API RSS {rss_before:.0f} -> {seen['rss_mb']:.0f} MB "
          f"({(seen['rss_mb'] - rss_before) * 1024 / seen['waiting']:.1f} KB per waiting client), "
          f"{seen['open_files']} open files; every waiter freed {seen['freed_in']:.2f}s after the hang-up; "
          f"low backlog left {backlog}")
    assert seen["waiting"] >= 0.9 * stack.crowd  # most really waited at once (the worker answers about 5 a second)
    assert named <= REDIS_CONNECTIONS
    assert every <= REDIS_CONNECTIONS + 2 * PRODUCER_CONNECTIONS  # the rest are kombu's, publishing
    assert backlog >= stack.crowd / 2  # the high chats really had a backlog to overtake
    assert high_wait <= 2 * idle_wait


def test_a_client_that_hangs_up_frees_its_waiter_at_once_and_its_job_goes_on(stack: Stack) -> None:
    stack.mock.configure("llm", ttft=0, tokens_per_second=2)  # a 9-token answer takes over 4 s
    try:
        for json_mode in (True, False):
            assert asyncio.run(_hang_up_mid_wait(stack, json_mode=json_mode)) == "succeeded"
    finally:
        stack.mock.configure("llm", ttft=TTFT, tokens_per_second=TOKENS_PER_SECOND)


async def _hang_up_mid_wait(stack: Stack, *, json_mode: bool) -> str:
    crowd = Crowd(stack.api)
    job_id = f"hang-up-{'json' if json_mode else 'stream'}-{uuid.uuid4().hex[:8]}"
    reader = await crowd.join({"message": "a slow answer", "priority": "high"}, json_mode=json_mode, job_id=job_id)
    if json_mode:
        await _poll(lambda: _state(stack, job_id) == "running", timeout=10, what=f"{job_id} to run")
    else:  # the stream has begun: its waiter now belongs to the streaming response
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert await asyncio.wait_for(reader.read(1), 10)
    assert await asyncio.to_thread(stack.waiters) == 1
    await crowd.abandon()
    freed_in = await _poll(lambda: stack.waiters() == 0, timeout=5, what=f"{job_id}: the waiter to go")
    # Freed at once, not when the job ends: the job (over 4 s of tokens) is still running.
    assert _state(stack, job_id) == "running", f"{job_id}: the waiter stayed {freed_in:.2f}s, until the job ended"
    await _poll(lambda: _state(stack, job_id) in ("succeeded", "failed"), timeout=20, what=f"{job_id} to end")
    return _state(stack, job_id)


def _state(stack: Stack, job_id: str) -> str | None:
    response = httpx.get(f"{stack.api}/jobs/{job_id}", timeout=10)
    return response.json().get("state") if response.status_code == 200 else None
