"""inflight: how many LLM calls one worker host holds at once with AGENT_WORKER_POOL=gevent.

For each step of the curve (100, 1,000, 3,000, 10,000 calls) the jobs are queued first (so the
producer is not what is measured), then gevent workers start against a slow mock LLM that holds
each call's first token until every call is open at once (then the step releases them all; a
ceiling of several times the expected ramp ends the hold otherwise), and every job is waited
for. Sampled every SAMPLE_EVERY s: the calls open at the mock (the sum over its processes), the
workers' RSS (each worker process and its children; the mock and Redis are not
counted), their open files, Redis's client connections and CPU.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import psutil
import redis

matplotlib.use("Agg")  # no display on CI or a server
import matplotlib.pyplot as plt  # noqa: E402

from bench.scenario import Result, Row, Size
from llmpool.client import Client
from llmpool.dev.mock_llm import MockControl
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.schemas import CHAT_QUEUES
from tests.processes import ManagedProcess, clean_env, start_worker, wait_for

__all__ = ["run", "raise_open_files"]

CURVE = (100, 1_000, 3_000, 10_000)
QUICK_CURVE = (100,)  # the smoke run: one step, enough calls that holding them at once is a figure
GOAL_CALLS, GOAL_RSS_MB = 10_000, 1024
MOCK_PROCESSES = 2  # one asyncio loop per process holds half the connections
SAMPLE_EVERY = 0.5
SUBMITTERS = 4  # threads queueing jobs through the Client
FIRST_GUESS_RATE = 50.0  # jobs/s the workers take, before a step has measured it
MAX_HOLD = 400.0  # seconds: the longest the mock keeps a call before its first token


def raise_open_files() -> int:
    """The soft limit on open files raised to the hard one (children inherit it); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass
class Peaks:
    """The highest figures the sampler saw during one step."""

    in_flight: int = 0
    rss_mb: float = 0.0
    open_files: int = 0
    redis_clients: int = 0
    in_flight_at: float = 0.0  # seconds after the workers were ready
    series: list[tuple[float, int]] = field(default_factory=list)  # (t, calls open at the mock)


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _sum(procs: list[psutil.Process], what: str) -> float:
    total = 0.0
    for proc in procs:
        try:
            value = getattr(proc, what)()
        except psutil.Error:
            continue
        total += value.rss if what == "memory_info" else (value.user + value.system if what == "cpu_times" else value)
    return total


class Sampler(threading.Thread):
    def __init__(self, mocks: list[MockControl], workers: list[psutil.Process], client: redis.Redis) -> None:
        super().__init__(name="inflight-sampler", daemon=True)
        self.mocks, self.workers, self.redis = mocks, workers, client
        self.peaks = Peaks()
        self.stop = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            self.sample()

    def sample(self) -> None:
        procs = [p for w in self.workers for p in _tree(w)]
        peaks, now = self.peaks, time.monotonic() - self.started_at
        in_flight = sum(int(m.stats("bench")["in_flight"]) for m in self.mocks)
        peaks.series.append((round(now, 2), in_flight))
        if in_flight > peaks.in_flight:
            peaks.in_flight, peaks.in_flight_at = in_flight, now
        peaks.rss_mb = max(peaks.rss_mb, _sum(procs, "memory_info") / 2**20)
        peaks.open_files = max(peaks.open_files, int(_sum(procs, "num_fds")))
        peaks.redis_clients = max(peaks.redis_clients, int(self.redis.info("clients")["connected_clients"]))


class MockFleet:
    """The mock LLM as MOCK_PROCESSES processes on one port (SO_REUSEPORT), each with its own control port."""

    def __init__(self, tmp: Path, *, hold: float) -> None:
        self.port = free_port()
        self.procs: list[ManagedProcess] = []
        self.controls: list[MockControl] = []
        for n in range(MOCK_PROCESSES):
            control = free_port()
            argv = [sys.executable, "-m", "llmpool.cli", "mock-llm", "--port", str(self.port), "--control-port",
                    str(control), "--ttft", str(hold), "--tps", "0", "--name", "bench", "--log-level", "WARNING"]
            env = {**clean_env(), "MOCK_LLM_REUSE_PORT": "1"}
            self.procs.append(ManagedProcess(f"mock{n}", argv, env, tmp / f"mock{n}.log").start())
            self.controls.append(MockControl(f"http://127.0.0.1:{control}").wait_ready(30))

    def hold(self, seconds: float) -> None:
        for control in self.controls:
            control.configure("bench", ttft=seconds)
            control.reset("bench")

    def stop(self) -> None:
        for control in self.controls:
            control.close()
        for proc in self.procs:
            proc.stop()


def _queue(url: str, calls: int) -> tuple[list[str], float]:
    """Queue `calls` jobs through the public Client from a few threads; their ids and the jobs/s."""
    started = time.monotonic()
    with Client(url) as client, ThreadPoolExecutor(SUBMITTERS) as pool:
        ids = list(pool.map(lambda i: client.submit(f"in-flight job {i}").job_id, range(calls)))
    return ids, calls / (time.monotonic() - started)


def _states(client: redis.Redis, job_ids: list[str]) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    keys = Keys()
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), "state")
    counts: dict[str, int] = {}
    for state in pipe.execute():
        name = state.decode() if state else "missing"
        counts[name] = counts.get(name, 0) + 1
    return counts


def _worker_env(url: str, mock_port: int, *, per_worker: int, hold: float) -> dict[str, str]:
    wait = hold * 3 + 30  # cold endpoint: the ceilings apply, so each must outlast the hold
    return clean_env(
        redis_url=url, local_llm_host="127.0.0.1", local_llm_port=mock_port,
        agent_backend_url=f"http://127.0.0.1:{free_port()}", agent_health_check_interval=3600,
        agent_worker_pool="gevent", agent_worker_concurrency=per_worker,
        agent_first_token_timeout=wait, agent_request_timeout=wait + 30, agent_suspect_max=wait,
        agent_job_deadline=wait + 600, agent_log_level="WARNING",
        # Each running job's message comes back once per visibility timeout and is acked as `busy`:
        # at 10,000 calls held for minutes that churn (60 s by default) cost more CPU than the calls.
        agent_visibility_timeout=hold * 2 + 120,
    )


def _step(tmp: Path, url: str, fleet: MockFleet, calls: int, *, workers: int, hold: float) -> dict[str, Any]:
    """One point of the curve: `calls` jobs queued, then held at once by `workers` gevent workers."""
    client = redis.Redis.from_url(url)
    client.flushall()
    fleet.hold(hold)
    ids, submit_rate = _queue(url, calls)
    per_worker = -(-calls // workers) + 10
    env = _worker_env(url, fleet.port, per_worker=per_worker, hold=hold)
    procs: list[ManagedProcess] = []
    sampler: Sampler | None = None
    try:
        for n in range(workers):
            procs.append(start_worker(tmp, env, name=f"g{calls}-{n}", pool="gevent", concurrency=per_worker,
                                      loglevel="WARNING", timeout=60))
        handles = [psutil.Process(p.pid) for p in procs]
        mocks = [psutil.Process(p.pid) for p in fleet.procs]
        before = _cpu(client, handles, mocks)
        sampler = Sampler(fleet.controls, handles, client)
        sampler.start()
        held = _hold_until_all_open(sampler, calls, hold)
        for control in fleet.controls:
            control.release("bench")
        until = time.monotonic() + hold * 3 + 120
        # A few commands a second, not an HGET per job: the bench must not load Redis or the CPU it measures.
        wait_for(lambda: _unfinished(client) == 0, timeout=until - time.monotonic(),
                 what=f"{calls} jobs to finish", interval=1.0)
        took = time.monotonic() - sampler.started_at
        cpu = {part: round(seconds - before[part], 1) for part, seconds in _cpu(client, handles, mocks).items()}
    finally:
        if sampler is not None:
            sampler.stop.set()
            sampler.join(5)
        for proc in procs:
            proc.stop()
    peaks = sampler.peaks
    states = _states(client, ids)
    mock_peak = sum(int(m.stats("bench")["peak_in_flight"]) for m in fleet.controls)
    client.close()
    return {"calls": calls, "workers": workers, "slots_per_worker": per_worker, "hold_s": round(held, 1),
            "hold_ceiling_s": hold,
            "submit_jobs_per_s": round(submit_rate, 1), "peak_in_flight": peaks.in_flight,
            "mock_peak_in_flight_sum": mock_peak, "seconds_to_peak": round(peaks.in_flight_at, 1),
            "answered": states.get("succeeded", 0), "states": states, "seconds_to_all_answered": round(took, 1),
            "worker_rss_mb": round(peaks.rss_mb, 1), "worker_open_files": peaks.open_files,
            "redis_clients": peaks.redis_clients, "cpu_s": cpu,
            "cores_used": {part: round(seconds / took, 2) for part, seconds in cpu.items()},
            "worker_cpu_ms_per_job": round(1000 * cpu["workers"] / calls, 2), "series": peaks.series}


def _hold_until_all_open(sampler: Sampler, calls: int, ceiling: float) -> float:
    """Seconds until every call is open at the mock (then the step releases them), at most `ceiling`
    (then the mock answers on its own, and the peak shows the calls were never all held)."""
    deadline = sampler.started_at + ceiling
    while sampler.peaks.in_flight < calls and time.monotonic() < deadline:
        time.sleep(SAMPLE_EVERY / 2)
    return time.monotonic() - sampler.started_at


def _cpu(client: redis.Redis, workers: list[psutil.Process], mocks: list[psutil.Process]) -> dict[str, float]:
    """CPU seconds used so far by the workers (with children), the mock's processes and Redis."""
    info = client.info("cpu")
    return {"workers": _sum([p for w in workers for p in _tree(w)], "cpu_times"),
            "mock": _sum(mocks, "cpu_times"),
            "redis": float(info["used_cpu_user"]) + float(info["used_cpu_sys"])}


def _unfinished(client: redis.Redis) -> int:
    """Jobs queued, running, parked or unpublished (all zero once every job has ended)."""
    counts = JobStore(client, Keys(), ttl=600, stream_ttl=600).counts()
    queued = sum(int(client.llen(queue)) for queue in CHAT_QUEUES.values())
    return queued + sum(counts.values())


def run(size: Size) -> Result:
    raise_open_files()
    curve = size.pick(CURVE, QUICK_CURVE)
    workers = size.pick(2, 1)
    tmp = Path(tempfile.mkdtemp(prefix="llmpool-inflight-"))
    server = RedisServer(data_dir=tmp / "redis", appendonly=False)
    server.start()
    fleet: MockFleet | None = None
    steps = []
    rate = FIRST_GUESS_RATE
    try:
        fleet = MockFleet(tmp, hold=5)
        for calls in curve:
            # Each call must still be open when the last job is taken: the mock holds the first
            # token until every call is open (then the step releases them), at most this ceiling,
            # well past the ramp at the rate the workers took jobs in the step before.
            hold = size.pick(min(MAX_HOLD, max(10.0, 4 * calls / rate)), 10.0)
            steps.append(_step(tmp, server.url, fleet, calls, workers=workers, hold=hold))
            print(f"inflight {calls}: {_brief(steps[-1])}", flush=True)
            rate = steps[-1]["peak_in_flight"] / max(steps[-1]["seconds_to_peak"], 1.0)
    finally:
        if fleet is not None:
            fleet.stop()
        server.stop()
    return _result(size, steps)


def _brief(step: dict[str, Any]) -> str:
    return (f"peak {step['peak_in_flight']} in flight after {step['seconds_to_peak']} s, "
            f"{step['answered']}/{step['calls']} answered in {step['seconds_to_all_answered']} s, "
            f"RSS {step['worker_rss_mb']} MB, {step['redis_clients']} Redis clients, "
            f"{step['worker_cpu_ms_per_job']} ms CPU/job, cores used {step['cores_used']}")


def _result(size: Size, steps: list[dict[str, Any]]) -> Result:
    top = steps[-1]
    rows = [Row(f"{s['calls']} calls: peak in flight / answered / worker RSS MB",
                f"{s['peak_in_flight']} / {s['answered']} / {s['worker_rss_mb']}") for s in steps]
    rows += [Row(f"{s['calls']} calls: cores used by workers / mock / Redis, worker CPU ms per job",
                 " / ".join(str(s["cores_used"][part]) for part in ("workers", "mock", "redis"))
                 + f", {s['worker_cpu_ms_per_job']}") for s in steps]
    held = top["peak_in_flight"] >= GOAL_CALLS and top["answered"] == top["calls"]
    rows += [Row("calls held at once on one host", top["peak_in_flight"], f">= {GOAL_CALLS:,}, all answered",
                 held if not size.quick else None),
             Row("worker RSS at that peak (MB, all worker processes)", top["worker_rss_mb"], f"< {GOAL_RSS_MB}",
                 top["worker_rss_mb"] < GOAL_RSS_MB if not size.quick else None)]
    pngs = [_plot(size.out / "inflight.png", steps), _timeline(size.out / "inflight_timeline.png", steps)]
    figures = {"steps": steps, "mock_processes": MOCK_PROCESSES, "counted_rss": "every worker process and its "
               "children (not the mock, Redis or the bench)"}
    return Result(figures, rows, pngs)


def _plot(path: Path, steps: list[dict[str, Any]]) -> Path:
    """Calls held and answered (left axis) and the workers' RSS (right axis) against the jobs queued."""
    calls = [s["calls"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(calls, calls, linestyle=":", color="grey", label="ideal (every job held at once)")
    ax.plot(calls, [s["peak_in_flight"] for s in steps], marker="o", label="peak calls open at the mock")
    ax.plot(calls, [s["answered"] for s in steps], marker="x", linestyle="--", label="answered")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("jobs queued")
    ax.set_ylabel("calls")
    memory = ax.twinx()
    memory.plot(calls, [s["worker_rss_mb"] for s in steps], marker="s", color="#c44e52", label="worker RSS (MB)")
    memory.axhline(GOAL_RSS_MB, color="#c44e52", linestyle=":", linewidth=1)
    memory.set_ylabel("worker RSS (MB), all processes")
    memory.set_ylim(0, max(GOAL_RSS_MB * 1.1, *[s["worker_rss_mb"] * 1.1 for s in steps]))
    lines = ax.get_legend_handles_labels()
    extra = memory.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper left")
    ax.set_title("gevent workers: LLM calls held at once on one host", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _timeline(path: Path, steps: list[dict[str, Any]]) -> Path:
    """Calls open at the mock over time, one line per step: the ramp, the hold, the drain."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for step in steps:
        ax.plot([t for t, _ in step["series"]], [n for _, n in step["series"]],
                label=f"{step['calls']:,} jobs (hold {step['hold_s']:.0f} s)")
    ax.set_xlabel("seconds after the workers were ready")
    ax.set_ylabel("calls open at the mock")
    ax.legend(fontsize=8)
    ax.set_title("calls in flight over time", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
