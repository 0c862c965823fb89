"""A real worker's heartbeat in /status and `llmpool status`: its host's figures, its own, its pool and
the chat jobs it has in flight; SIGKILLed, it drops out within ALIVE_FOR of its last heartbeat."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from llmpool.client import Client
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import free_port
from llmpool.heartbeats import ALIVE_FOR
from llmpool.keys import Keys
from tests.processes import clean_env, start_api, start_worker, wait_for

LLM_SECONDS = 4.0  # the chat stays in flight this long
SLACK = 3.0  # polling and a loaded machine, on top of ALIVE_FOR


def _workers(url: str) -> dict[str, dict[str, Any]]:
    """node -> the worker's entry, each with its host's figures, from GET /status."""
    body = httpx.get(f"{url}/status", timeout=10).json()
    found = {}
    for host, entry in body["hosts"].items():
        for worker in entry["workers"]:
            found[worker["node"]] = {**worker, "host": host, "host_stats": entry["host"], "gpus": entry["gpus"]}
    assert body["workers"] == len(found)  # the TT-Studio count stays, and agrees
    return found


def test_a_workers_heartbeat_shows_in_status_and_drops_out_after_sigkill(tmp_path: Path, redis_url: str,
                                                                          redis_client: Any):
    with MockLLM(containers=[ContainerSpec(name="llm", ttft=LLM_SECONDS, tokens_per_second=0)]) as mock:
        env = clean_env(redis_url=redis_url, local_llm_host="127.0.0.1", local_llm_port=mock.port("llm"),
                        agent_backend_url=f"http://127.0.0.1:{free_port()}", agent_health_check_interval=3600,
                        agent_discovery_interval=3600, agent_request_timeout=30, agent_first_token_timeout=30)
        api, url = start_api(tmp_path, env)
        worker = start_worker(tmp_path, env, name="hb", concurrency=3)
        node = worker.argv[worker.argv.index("-n") + 1]
        client = Client(redis_url)
        try:
            # Two heartbeats at least, so the CPU figures measure an interval.
            wait_for(lambda: _workers(url).get(node, {}).get("process", {}).get("cpu_percent") is not None
                     and _workers(url)[node].get("pool") == "threads", timeout=20, what="the worker's figures")
            job = client.submit("hello", priority="high")
            wait_for(lambda: _workers(url)[node]["in_flight_jobs"] == 1, timeout=LLM_SECONDS,
                     what="the running chat in the worker's figures")
            shown = _workers(url)[node]
            cli = subprocess.run([sys.executable, "-m", "llmpool.cli", "status", "--workers", "--json"],
                                 env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
            client.result(job.job_id, timeout=30)
            worker.kill(signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: node not in _workers(url), timeout=ALIVE_FOR + SLACK, what="the killed worker to drop out")
            gone_after = time.monotonic() - killed
            left = redis_client.exists(Keys().worker_stats(node))
        finally:
            client.close()
            worker.stop()
            api.stop()
    assert shown["host"] == socket.gethostname()
    assert (shown["pool"], shown["concurrency"], shown["pid"]) == ("threads", 3, worker.pid)
    assert shown["queues"] == ["control", "chat.high", "chat.default", "chat.low"]
    assert shown["process"]["rss_bytes"] > 20 * 2**20 and shown["process"]["processes"] == 1
    host = shown["host_stats"]
    assert host["memory_total_bytes"] == psutil.virtual_memory().total and host["cpu_count"] == psutil.cpu_count()
    assert 0 < host["memory_available_bytes"] <= host["memory_total_bytes"] and host["load_1m"] >= 0
    assert isinstance(shown["gpus"], list)  # empty without an NVIDIA GPU and NVML: normal, not an error
    assert cli.returncode == 0, cli.stderr
    assert [w["node"] for w in json.loads(cli.stdout)[socket.gethostname()]["workers"]] == [node]
    assert gone_after <= ALIVE_FOR + SLACK and left == 0  # its figures expired with it
    assert "could not" not in worker.log_tail(400).lower()  # no heartbeat failed; no GPU error either
