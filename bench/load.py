"""Load with faults: 200 HTTP clients for 60 s against three mock endpoints that misbehave.

`python -m bench.load [--clients 200] [--seconds 60]`: a real Redis (AOF on), the mock LLM as its
own process with three containers, two chat workers, the control worker, beat and the API under
uvicorn. Each client posts a chat, waits for its answer and posts the next one. Meanwhile:
- `primary` (the model the selection prefers) dies at 10 s and comes back at 45 s;
- `second` trickles its answer a byte at a time, so every call to it runs into the total timeout;
- `third` answers 429 storms: 5 s of rate limiting every 10 s from 20 s on.

Prints and saves: requests sent, answered and failed (by error type), where every job ended,
p50/p99 latency, peak RSS of every process, Redis memory per job, and Redis connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from llmpool.dev.mock_llm.control import MockControl
from llmpool.dev.mock_llm.state import FAULTS
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.registry import Registry
from tests.processes import ManagedProcess, clean_env, start_api, start_beat, start_worker, wait_for

RESULTS = Path(__file__).parent / "results"
PRIMARY, SECOND, THIRD = "primary", "primary-2", "primary-3"  # the mock names its extra containers so


@dataclass
class Outcome:
    started: float
    latency: float
    status: int
    job_id: str | None
    kind: str  # "answered", or the error type the API gave


@dataclass
class Sampler:
    """Peak RSS of every process and peak Redis connections, sampled every 0.5 s."""

    procs: dict[str, ManagedProcess]
    redis_client: redis.Redis
    redis_port: int
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    peak_redis_connections: dict[str, int] = field(default_factory=dict)
    peak_connected_clients: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Sampler:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def sample(self) -> None:
        for name, proc in self.procs.items():
            try:
                tree = [psutil.Process(proc.pid)]
                tree += tree[0].children(recursive=True)
                rss = sum(p.memory_info().rss for p in tree) / 2**20
                conns = sum(1 for p in tree for c in p.net_connections(kind="tcp")
                            if c.raddr and c.raddr.port == self.redis_port)
            except psutil.Error:
                continue
            self.peak_rss_mb[name] = max(self.peak_rss_mb.get(name, 0.0), round(rss, 1))
            self.peak_redis_connections[name] = max(self.peak_redis_connections.get(name, 0), conns)
        try:
            clients = int(self.redis_client.info("clients")["connected_clients"])
        except redis.RedisError:
            return
        self.peak_connected_clients = max(self.peak_connected_clients, clients)


def _faults(control: MockControl, t0: float, seconds: float) -> None:
    """Play the fault schedule (scaled to the run's length) until the run ends."""
    scale = seconds / 60
    if "trickle" in FAULTS:
        control.set_fault(SECOND, "trickle")
    else:
        print("note: this mock has no trickle fault; `second` hangs instead", file=sys.stderr)
        control.set_fault(SECOND, "hang")
    plan = [(10 * scale, lambda: control.set_fault(PRIMARY, "refuse", seconds=35 * scale))]
    plan += [(at * scale, lambda: control.set_fault(THIRD, "ratelimit", seconds=5 * scale))
             for at in range(20, 60, 10)]
    for at, action in plan:
        time.sleep(max(0.0, t0 + at - time.time()))
        action()


async def _client(http: httpx.AsyncClient, api: str, n: int, until: float, out: list[Outcome]) -> None:
    i = 0
    while time.time() < until:
        i += 1
        started = time.time()
        try:
            response = await http.post(f"{api}/poll_requests", json={"message": f"load {n}.{i}"},
                                       headers={"Accept": "application/json"})
            body = response.json()
            kind = "answered" if response.status_code == 200 else str((body.get("error") or {}).get("type"))
            out.append(Outcome(started, time.time() - started, response.status_code, body.get("job_id"), kind))
        except (httpx.HTTPError, ValueError) as exc:
            out.append(Outcome(started, time.time() - started, 0, None, f"client:{type(exc).__name__}"))


async def _drive(api: str, clients: int, seconds: float) -> list[Outcome]:
    out: list[Outcome] = []
    until = time.time() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(180, connect=10)) as http:
        await asyncio.gather(*(_client(http, api, n, until, out) for n in range(clients)))
    return out


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * q))], 3)


def _where_jobs_ended(store: JobStore, outcomes: list[Outcome], names: dict[str, str]) -> dict[str, Any]:
    """Every job id the API handed out, by its record's final state (none may be left running)."""
    states: Counter[str] = Counter()
    endpoints: Counter[str] = Counter()
    for outcome in outcomes:
        if outcome.job_id is None:
            states["no job (refused before enqueue)"] += 1
            continue
        record = store.get(outcome.job_id) or {}
        states[str(record.get("state", "missing"))] += 1
        result = record.get("result") or {}
        if record.get("state") == "succeeded":
            endpoint = str(result.get("endpoint", "?"))
            endpoints[names.get(endpoint, endpoint)] += 1
    return {"by_state": dict(states), "answered_by": dict(endpoints)}


def run(clients: int, seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="llmpool-load-"))
    mock_port, control_port = free_port(), free_port()
    procs: dict[str, ManagedProcess] = {}
    with RedisServer(data_dir=tmp / "redis", appendonly=True) as server:
        argv = [sys.executable, "-m", "llmpool.cli", "mock-llm", "--port", str(mock_port),
                "--control-port", str(control_port), "--name", PRIMARY, "--extra-containers", "2",
                "--ttft", "0.3", "--tps", "50", "--log-level", "WARNING"]
        procs["mock"] = ManagedProcess("mock", argv, clean_env(), tmp / "mock.log").start()
        control = MockControl(f"http://127.0.0.1:{control_port}").wait_ready(30)
        env = clean_env(
            redis_url=server.url, agent_backend_url=control.backend_url, agent_fallback_to_local="false",
            agent_connect_timeout=1, agent_first_token_timeout=5, agent_request_timeout=10,
            agent_health_check_interval=5, agent_discovery_interval=10, agent_job_deadline=120,
            agent_api_max_waiters=clients * 2,
        )
        try:
            for n in (1, 2):
                procs[f"worker{n}"] = start_worker(tmp, env, name=f"chat{n}", concurrency=32,
                                                   queues="chat.high,chat.default,chat.low", loglevel="WARNING")
            procs["control"] = start_worker(tmp, env, name="control", concurrency=4, queues="control",
                                            loglevel="WARNING")
            procs["beat"] = start_beat(tmp, env)
            procs["api"], api = start_api(tmp, env)
            client = redis.Redis.from_url(server.url)
            keys = Keys()
            store = JobStore(client, keys, ttl=600, stream_ttl=600)
            registry = Registry(client, keys)
            wait_for(lambda: (s := registry.selection()) is not None and len(s.order) == 3, timeout=60,
                     what="all three endpoints selectable")
            assert server.process is not None
            procs["redis"] = _Pid(server.process.pid)  # type: ignore[assignment]
            memory_before = int(client.info("memory")["used_memory"])
            sampler = Sampler(procs, client, server.port).start()
            t0 = time.time()
            threading.Thread(target=_faults, args=(control, t0, seconds), daemon=True).start()
            outcomes = asyncio.run(_drive(api, clients, seconds))
            sampler.stop()
            sampler.sample()
            memory_after = int(client.info("memory")["used_memory"])
            names = {e.id: e.container_name or e.id for e in registry.snapshot().endpoints}
            ended = _where_jobs_ended(store, outcomes, names)
            jobs = sum(1 for o in outcomes if o.job_id)
            stats = {name: control.stats(name) for name in (PRIMARY, SECOND, THIRD)}
        finally:
            for name, proc in procs.items():
                if name not in ("mock", "redis"):
                    proc.stop()
            procs["mock"].stop()
    latencies = [o.latency for o in outcomes if o.kind == "answered"]
    return {
        "scenario": "load", "clients": clients, "seconds": seconds,
        "requests": len(outcomes), "answered": len(latencies),
        "failed_by_type": dict(Counter(o.kind for o in outcomes if o.kind != "answered")),
        "jobs_by_final_state": ended,
        "latency_answered_s": {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99),
                               "max": _percentile(latencies, 1.0)},
        "latency_all_s": {"p50": _percentile([o.latency for o in outcomes], 0.5),
                          "p99": _percentile([o.latency for o in outcomes], 0.99)},
        "peak_rss_mb": sampler.peak_rss_mb,
        "redis_memory_per_job_bytes": round((memory_after - memory_before) / jobs) if jobs else None,
        "peak_redis_connections_by_process": sampler.peak_redis_connections,
        "peak_redis_connected_clients": sampler.peak_connected_clients,
        "mock_requests": {name: {"by_status": s.get("by_status"), "peak_in_flight": s.get("peak_in_flight")}
                          for name, s in stats.items()},
        "workdir": str(tmp),
    }


@dataclass
class _Pid:
    """A process the sampler watches but the bench does not stop (Redis stops with its server)."""

    pid: int

    def stop(self) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    report = run(args.clients, args.seconds)
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"load-{int(time.time())}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
