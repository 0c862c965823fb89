"""The bench rig: a real Redis, the mock LLM as its own process, and a worker process per variant."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from celery import Celery
from celery.result import ResultSet

from bench.progress import bar
from llmpool.client import Client
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.errors import LLMPoolError
from llmpool.settings import load_settings
from tests.processes import ManagedProcess, clean_env, start_worker, wait_for
from workers.config import celery_config

MESSAGE = "benchmark message"
CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": MESSAGE}], "max_tokens": 2048,
             "stream": True, "stream_options": {"include_usage": True}}


@dataclass
class Run:
    rate: float
    rss_mb: float
    failed: int
    reasons: list[str]
    latency_ms: float = 0.0  # median of jobs sent one at a time, on an idle worker
    cpu_ms: float = 0.0  # the worker process's CPU (user + system) per job over the timed jobs


class Rig:
    """A real Redis and the mock LLM as `mock_processes` processes sharing one port (SO_REUSEPORT):
    the kernel spreads connections over them, so one mock event loop is not the figures' ceiling."""

    def __init__(self, *, ttft: float, tps: float, threads: int, mock_processes: int = 2, warm_up: int = 50) -> None:
        self.ttft, self.tps, self.threads, self.warm_up = ttft, tps, threads, warm_up
        self.tmp = Path(tempfile.mkdtemp(prefix="llmpool-bench-"))
        self.redis = RedisServer(data_dir=self.tmp / "redis", appendonly=False)
        self.llm_port = free_port()
        self.mock_processes = mock_processes
        self.mocks: list[ManagedProcess] = []

    def __enter__(self) -> Rig:
        self.redis.start()
        argv = [sys.executable, "-m", "llmpool.cli", "mock-llm", "--port", str(self.llm_port),
                "--control-port", "0", "--ttft", str(self.ttft), "--tps", str(self.tps), "--name", "bench",
                "--log-level", "WARNING"]
        env = {**clean_env(), "MOCK_LLM_REUSE_PORT": "1"}
        try:
            for n in range(self.mock_processes):
                self.mocks.append(ManagedProcess(f"mock{n}", argv, env, self.tmp / f"mock{n}.log").start())
            for mock in self.mocks:
                mock.wait_ready(self._mock_answers, 30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _mock_answers(self) -> bool:
        try:
            return httpx.get(f"{self.llm_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def llm_url(self) -> str:
        return f"http://127.0.0.1:{self.llm_port}"

    def env(self) -> dict[str, str]:
        return clean_env(redis_url=self.redis.url, local_llm_host="127.0.0.1", local_llm_port=self.llm_port,
                         agent_worker_concurrency=self.threads, bench_connections=self.threads)

    def celery(self) -> Celery:
        app = Celery("bench-driver")
        app.conf.update(celery_config(load_settings(redis_url=self.redis.url)))
        return app

    def __exit__(self, *exc: object) -> None:
        for mock in self.mocks:
            mock.stop()
        self.redis.stop()


def _wait_all(results: list, timeout: float) -> list[str]:
    """Block until every job is done; returns why each failed one did.

    llmpool jobs are job ids read through the Client (the job record is their one stored outcome);
    the bare baseline's are Celery results.
    """
    if results and isinstance(results[0], tuple):
        client, until = results[0][0], time.time() + timeout
        reasons = []
        for _client, job_id in results:
            try:
                client.result(job_id, timeout=max(0.1, until - time.time()))
            except LLMPoolError as exc:
                reasons.append(f"{exc.code}: {exc.message}"[:300])
        return reasons
    ResultSet(results).join(timeout=timeout, propagate=False)
    return [f"{r.state}: {r.result!r}"[:300] for r in results if r.state != "SUCCESS"]


def _rss_mb(proc: ManagedProcess) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 2**20


def _cpu_seconds(proc: ManagedProcess) -> float:
    times = psutil.Process(proc.pid).cpu_times()
    return times.user + times.system


def _timed(proc: ManagedProcess, send: list, timeout: float, desc: str = "") -> Run:
    cpu = _cpu_seconds(proc)
    started = time.perf_counter()
    with bar(len(send), desc or "sending") as progress:
        results = []
        for fn in send:
            results.append(fn())
            progress.update()
    reasons = _wait_all(results, timeout)
    elapsed = time.perf_counter() - started
    cpu_ms = (_cpu_seconds(proc) - cpu) * 1000 / len(results)
    return Run(rate=len(results) / elapsed, rss_mb=_rss_mb(proc), failed=len(reasons),
               reasons=sorted(set(reasons))[:5], cpu_ms=round(cpu_ms, 2))


def _one_at_a_time(send: object, count: int) -> float:
    """Median milliseconds from send to answer of `count` jobs sent one after another."""
    spans = []
    for _ in range(count):
        started = time.perf_counter()
        _wait_all([send()], 60)  # type: ignore[operator]
        spans.append((time.perf_counter() - started) * 1000)
    return statistics.median(spans)


def measure_llmpool(rig: Rig, jobs: int, latency_jobs: int = 0) -> Run:
    worker = start_worker(rig.tmp, rig.env(), name="bench", concurrency=rig.threads, loglevel="WARNING")
    try:
        client = Client(rig.redis.url)

        def one() -> object:
            return client, client.submit(MESSAGE).job_id

        _timed(worker, [one] * rig.warm_up, 60)  # warm up connections
        run = _timed(worker, [one] * jobs, 600, "llmpool")
        run.latency_ms = _one_at_a_time(one, latency_jobs) if latency_jobs else 0.0
        return run
    finally:
        worker.stop()


def measure_bare(rig: Rig, jobs: int, latency_jobs: int = 0) -> Run:
    env = rig.env()
    hostname = f"bare@{os.getpid()}"
    argv = [sys.executable, "-m", "celery", "-A", "bench.bare", "worker", "-P", "threads", "-c",
            str(rig.threads), "-Q", "bench.bare", "-n", hostname, "--without-gossip", "--without-mingle",
            "--loglevel", "WARNING"]
    worker = ManagedProcess("bare worker", argv, env, rig.tmp / "bare.log").start()
    try:
        app = rig.celery()
        wait_for(lambda: bool(app.control.ping(destination=[hostname], timeout=0.5)), timeout=30,
                 what="bare worker")
        body = CHAT_BODY
        url = rig.llm_url + "/v1/chat/completions"

        def one() -> object:
            return app.send_task("bench.bare_chat", args=[url, body], queue="bench.bare")

        _timed(worker, [one] * rig.warm_up, 60)
        run = _timed(worker, [one] * jobs, 600, "bare celery")
        run.latency_ms = _one_at_a_time(one, latency_jobs) if latency_jobs else 0.0
        return run
    finally:
        worker.stop()



def _raw_request(url: str) -> tuple[str, int, bytes]:
    """Host, port and the bytes of one streamed chat POST, built once."""
    parsed = httpx.URL(url)
    body = json.dumps(CHAT_BODY).encode()
    head = (f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {parsed.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return parsed.host, parsed.port or 80, head.encode() + body


async def _hammer(url: str, requests: int, concurrency: int) -> int:
    """`requests` streamed chats, `concurrency` keep-alive connections, each answer read to its last
    chunk; how many failed. Plain sockets, not an HTTP client library: the load generator shares the
    CPU with the mock, so the less it spends per request, the closer the figure is to the mock's own.
    """
    host, port, request = _raw_request(url)
    failed, todo = 0, iter(range(requests))

    async def one(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
        reader, writer = conn
        writer.write(request)
        answer = b""
        while not answer.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's last chunk
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the mock closed the connection")
            answer += data
        return answer.startswith(b"HTTP/1.1 200")

    async def lane() -> None:
        nonlocal failed
        conn = None
        for _ in todo:
            try:
                conn = conn or await asyncio.open_connection(host, port)
                failed += not await one(conn)
            except OSError:  # ConnectionError included: count it, reconnect for the next one
                failed += 1
                if conn is not None:
                    conn[1].close()
                conn = None
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return failed


def _load_process(url: str, requests: int, concurrency: int) -> int:
    return asyncio.run(_hammer(url, requests, concurrency))


def calibrate(rig: Rig, requests: int, concurrency: int, load_processes: int = 2) -> dict[str, float]:
    """The mock's own rate under a plain HTTP load (asyncio sockets in `load_processes` processes),
    measured in the same run.

    A lower bound of what the mock sustains (the load generator shares the machine): the bench's
    figures measure llmpool only while they stay well under it.
    """
    url = rig.llm_url + "/v1/chat/completions"
    share, lanes = requests // load_processes, max(1, concurrency // load_processes)
    with ProcessPoolExecutor(load_processes, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_load_process, [url] * load_processes, [min(share, 50)] * load_processes,
                      [lanes] * load_processes))  # warm up: processes started, connections open
        started = time.perf_counter()
        failed = sum(pool.map(_load_process, [url] * load_processes, [share] * load_processes,
                              [lanes] * load_processes))
        elapsed = time.perf_counter() - started
    return {"mock_jobs_per_s": round(share * load_processes / elapsed, 1), "failed": failed,
            "requests": share * load_processes, "concurrency": lanes * load_processes,
            "mock_processes": rig.mock_processes, "load_processes": load_processes}
