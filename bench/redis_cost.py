"""redis_cost: what one job costs in Redis: commands per job, and memory per queued and finished job.

A real Redis, one worker (8 threads) and a fast mock LLM. Commands: `MONITOR` during JOBS jobs
(submitted through the Client, run first time on a healthy endpoint) splits every command by name
and by where it ran: sent by a client (a round trip, or one command of a pipeline) or run inside a
Lua script; the idle pool's own traffic (broker polls, heartbeats), measured for as long before the
jobs, is subtracted. `INFO commandstats` before and after gives the same total as a cross-check.
Memory: bench/memory.py's measure (used_memory per queued job with no worker running, then per
finished job).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import redis

from bench import memory, plots
from bench.scenario import Result, Row, Size
from llmpool.client import Client
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.keys import Keys
from tests.processes import clean_env, start_worker, wait_for

STOP = "bench-monitor-stop"
PIPELINE_GAP = 20e-6  # s between a client's commands above which they were two round trips


class Monitor:
    """Every command Redis runs, by (where, name), until stopped; commands from `ignore` (our poller)
    are not counted."""

    def __init__(self, url: str) -> None:
        self.conn = redis.Redis.from_url(url)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.trips: Counter[str] = Counter()  # estimated round trips by client address
        self.ignore: set[str] = set()
        self.owners: dict[str, str] = {}  # client address -> "worker" or "submitter"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def start(self) -> Monitor:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("MONITOR did not start")
        return self

    def _run(self) -> None:
        in_multi: set[str] = set()  # clients inside MULTI ... EXEC: the block is one round trip
        last_who, last_time = "", 0.0
        with self.conn.monitor() as feed:
            self._ready.set()
            for event in feed.listen():
                name = event["command"].split(" ", 1)[0].lower()
                if STOP in event["command"]:
                    return
                who = f"{event['client_address']}:{event['client_port']}"
                if event["client_type"] != "lua":
                    # Redis runs a pipeline's commands back to back; a client's next round trip comes
                    # after its reply was read, later than PIPELINE_GAP or after another client's.
                    if who != last_who or event["time"] - last_time > PIPELINE_GAP:
                        self.trips[who] += who not in self.ignore
                    last_who = who
                last_time = event["time"]
                if event["client_type"] == "lua":
                    where = "lua"
                elif who in in_multi:
                    where = "in-multi"  # sent in the same round trip as its MULTI
                    if name in ("exec", "discard"):
                        in_multi.discard(who)
                else:
                    where = "client"
                    if name == "multi":
                        in_multi.add(who)
                if who not in self.ignore:
                    self.counts[(where, name)] += 1

    def stop(self, url: str) -> Monitor:
        with redis.Redis.from_url(url) as conn:
            conn.echo(STOP)
        self._thread.join(30)
        return self


def _owners(redis_port: int, worker_pid: int) -> dict[str, str]:
    """Which process holds each open connection to Redis: the worker (and its children) or this one,
    which submits the jobs."""
    worker = psutil.Process(worker_pid)
    pids = {worker_pid} | {child.pid for child in worker.children(recursive=True)}
    owners = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port == redis_port and conn.pid is not None:
            role = "worker" if conn.pid in pids else "submitter" if conn.pid == os.getpid() else "other"
            owners[f"{conn.laddr.ip}:{conn.laddr.port}"] = role
    return owners


def _commandstats_total(conn: redis.Redis) -> int:
    return sum(int(v["calls"]) for v in conn.info("commandstats").values())


def _monitored(url: str, seconds: float | None, work: Any = None) -> tuple[Monitor, float]:
    """The commands seen while `work(monitor)` runs (or for `seconds`), and how long that took."""
    monitor = Monitor(url).start()
    started = time.monotonic()
    if work is not None:
        work(monitor)
    else:
        time.sleep(seconds or 0)
    elapsed = time.monotonic() - started
    return monitor.stop(url), elapsed


def commands_per_job(jobs: int, idle_seconds: float = 3.0) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="llmpool-bench-redis-cost-"))
    spec = ContainerSpec(name="llm", ttft=0.01, tokens_per_second=100_000)
    with RedisServer(data_dir=tmp / "redis", appendonly=False) as server, MockLLM(containers=[spec]) as mock:
        env = clean_env(redis_url=server.url, local_llm_host="127.0.0.1", local_llm_port=mock.port("llm"),
                        agent_backend_url=f"http://127.0.0.1:{free_port()}")
        worker = start_worker(tmp, env, name="cost", concurrency=8, loglevel="WARNING")
        keys = Keys()
        try:
            with Client(server.url) as client, redis.Redis.from_url(server.url) as poller:
                for _ in range(10):  # warm up: scripts loaded, connections open, endpoint selected
                    client.result(client.submit("warm up").job_id, timeout=60)

                def run_jobs(monitor: Monitor) -> None:
                    info = poller.client_info()
                    monitor.ignore.add(str(info["addr"]))
                    ids = [client.submit("cost").job_id for _ in range(jobs)]
                    # Nothing queued, unacked or running, and the last job submitted has finished.
                    wait_for(lambda: not poller.exists("chat.default", "unacked", keys.jobs_running())
                             and poller.hget(keys.job(ids[-1]), "state") == b"succeeded",
                             timeout=300, what="every job finished", interval=0.2)
                    time.sleep(0.5)  # acks and the last writes
                    monitor.owners = _owners(server.port, worker.pid)

                idle_run, idle_s = _monitored(server.url, idle_seconds)
                before = _commandstats_total(poller)
                busy_run, busy_s = _monitored(server.url, None, run_jobs)
                idle, busy = idle_run.counts, busy_run.counts
                total_by_stats = _commandstats_total(poller) - before
        finally:
            worker.stop()
    per_job: dict[str, float] = {}
    for key in set(busy) | set(idle):
        corrected = busy[key] - idle[key] * busy_s / idle_s
        if abs(corrected) >= 0.05 * jobs:
            per_job[f"{key[0]} {key[1]}"] = round(corrected / jobs, 2)
    trips: Counter[str] = Counter()
    for who, count in busy_run.trips.items():
        trips[busy_run.owners.get(who, "other")] += count
    idle_trips = sum(idle_run.trips.values()) * busy_s / idle_s  # the idle pool's, all the worker's
    trips["worker"] -= idle_trips
    client_total = sum(v for k, v in per_job.items() if k.startswith("client "))
    in_multi = sum(v for k, v in per_job.items() if k.startswith("in-multi "))
    lua_total = sum(v for k, v in per_job.items() if k.startswith("lua "))
    return {"jobs": jobs, "seconds": round(busy_s, 2), "idle_seconds_measured": round(idle_s, 2),
            "client_commands_per_job": round(client_total, 2), "lua_commands_per_job": round(lua_total, 2),
            "commands_inside_multi_per_job": round(in_multi, 2),
            "round_trips_per_job_estimated": {who: round(n / jobs, 2) for who, n in sorted(trips.items())},
            "pipeline_gap_s": PIPELINE_GAP,
            "per_job_by_command": dict(sorted(per_job.items(), key=lambda kv: -kv[1])),
            "idle_commands_per_s": {f"{w} {n}": round(c / idle_s, 2) for (w, n), c in idle.items()},
            "commandstats_calls_per_job_raw": round(total_by_stats / jobs, 2)}


def run(size: Size) -> Result:
    commands = commands_per_job(size.pick(300, 20), idle_seconds=size.pick(3.0, 1.0))
    mem = memory.measure(size.pick(500, 20), stream=False, threads=8)
    figures = {"commands": commands, "memory": mem}
    by_command = commands["per_job_by_command"]
    script_calls = sum(v for k, v in by_command.items() if k in ("client evalsha", "client eval", "client fcall"))
    trips = commands["round_trips_per_job_estimated"]
    rows = [Row("round trips per job, worker (estimated: a pipeline counts one)", trips.get("worker", 0.0)),
            Row("round trips per job, submitting client (estimated)", trips.get("submitter", 0.0)),
            Row("commands from clients per job (a MULTI block counts one, a plain pipeline one per command)",
                commands["client_commands_per_job"]),
            Row("commands inside MULTI blocks per job", commands["commands_inside_multi_per_job"]),
            Row("Lua scripts run per job", round(script_calls, 2)),
            Row("commands inside Lua per job", commands["lua_commands_per_job"]),
            Row("all commands per job (INFO commandstats, idle traffic included)",
                commands["commandstats_calls_per_job_raw"]),
            Row("bytes per queued job", mem["bytes_per_queued_job"]),
            Row("bytes per finished job", mem["bytes_per_finished_job"])]
    top = dict(list((k, v) for k, v in by_command.items() if k.startswith("client "))[:8])
    png = plots.bars(size.out / "redis_cost.png", "client commands per job, by command", "per job",
                     {k.removeprefix("client "): v for k, v in top.items()})
    return Result(figures, rows, [png])
