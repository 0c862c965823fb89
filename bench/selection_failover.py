"""Time from the selected endpoint's death to a new selection, health checks only (no job traffic).

`python -m bench.selection_failover [--default] [--short]`: a real worker and beat against two mock
containers; the selected one starts refusing connections and we poll the registry every 20 ms.
With the defaults (30 s interval, 3 failures) expect 60-90 s: that is why the job path (issue 4)
must not wait for health checks.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import redis

from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from llmpool.keys import Keys
from llmpool.registry import Registry
from tests.processes import ManagedProcess, clean_env, start_beat, start_worker, wait_for

RESULTS = Path(__file__).parent / "results"
CONTAINERS = [ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct"),
              ContainerSpec(name="backup", model_name="Llama-3.1-8B-Instruct")]


def _current(registry: Registry) -> str | None:
    selection = registry.selection()
    return selection.current.id if selection and selection.current else None


def measure(interval: float, failures: int, timeout: float) -> dict[str, float | int]:
    tmp = Path(tempfile.mkdtemp(prefix="llmpool-selection-"))
    with RedisServer(data_dir=tmp / "redis", appendonly=False) as server, MockLLM(containers=CONTAINERS) as mock:
        env = clean_env(redis_url=server.url, agent_backend_url=mock.backend_url, agent_fallback_to_local="false",
                        agent_health_check_interval=interval, agent_max_failures=failures,
                        agent_health_check_timeout=min(5, max(interval, 1)))
        procs: list[ManagedProcess] = []
        client = redis.Redis.from_url(server.url)
        try:
            procs += [start_worker(tmp, env, concurrency=4, loglevel="WARNING"), start_beat(tmp, env)]
            registry = Registry(client, Keys())
            wait_for(lambda: _current(registry) == deploy_id("primary"), timeout=60, what="first selection")
            mock.set_fault("primary", "refuse")
            died = time.monotonic()
            wait_for(lambda: _current(registry) == deploy_id("backup"), timeout=timeout, what="failover",
                     interval=0.02)
            return {"health_interval_s": interval, "max_failures": failures,
                    "death_to_new_selection_s": round(time.monotonic() - died, 3)}
        finally:
            client.close()
            for proc in reversed(procs):
                proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.selection_failover")
    parser.add_argument("--default", action="store_true", help="30 s interval, 3 failures (takes ~90 s)")
    parser.add_argument("--short", action="store_true", help="0.5 s interval, 2 failures")
    args = parser.parse_args()
    runs = []
    if args.short or not args.default:
        runs.append(measure(0.5, 2, timeout=30))
    if args.default:
        runs.append(measure(30, 3, timeout=200))
    print(json.dumps(runs, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"selection-failover-{int(time.time())}.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
