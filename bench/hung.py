"""A hung endpoint under open-loop load, llmpool and LiteLLM's Router side by side.

`python -m bench.hung [--duration 60 --rate 8 --hang-at 20 --hang-for 20]`: one mock LLM process
with two containers (the 70B, selected, and the 8B, healthy), 8 chats a second for 60 s; 20 s in,
the 70B hangs for 20 s (it reads each request and never answers; requests it took during the hang
stay hung until their client leaves). The same timeline runs twice on the same mock:

- llmpool: a real Redis and one real worker process with `make up`'s defaults (64 threads, the
  default timeouts, hedging on), chats submitted through `llmpool.Client`;
- LiteLLM's Router (bench/hung_litellm.py): the 70B and 8B groups, a fallback between them,
  `timeout=30`.

Prints, for each: chats completed, p50/p95 latency of the chats sent during the outage, when the
first answer from the 8B came after the hang began, and the calls the hung endpoint received.
Needs the bench extra (`pip install -e .[bench]`, LiteLLM); takes about three minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.hung_timeline import Chat, Plan, summarize
from llmpool.client import Client
from llmpool.dev.mock_llm import MockControl, deploy_id
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.errors import LLMPoolError
from llmpool.keys import Keys
from llmpool.redis_conn import sync_client
from llmpool.registry import Registry
from tests.processes import ManagedProcess, clean_env, start_worker, wait_for

RESULTS = Path(__file__).parent / "results"
BIG, SMALL = "llm", "llm-2"  # the mock CLI's first container (70B) and its first extra one (8B)
WHO = {deploy_id(BIG): "70b", deploy_id(SMALL): "8b"}


class Mock:
    """`llmpool mock-llm` as its own process: the 70B on one port, the 8B on the next."""

    def __init__(self, tmp: Path) -> None:
        port, control = free_port(), free_port()
        argv = [sys.executable, "-m", "llmpool.cli", "mock-llm", "--port", str(port), "--control-port",
                str(control), "--name", BIG, "--extra-containers", "1", "--ttft", "0.1", "--tps", "100",
                "--log-level", "WARNING"]
        self.proc = ManagedProcess("mock", argv, clean_env(), tmp / "mock.log").start()
        self.control = MockControl(f"http://127.0.0.1:{control}")
        self.hung_at = 0.0  # unix time the last hang began
        try:
            self.control.wait_ready(30)
        except TimeoutError:
            self.proc.stop()
            raise

    def fresh(self) -> None:
        for name in (BIG, SMALL):
            self.control.configure(name, fault="none")
            self.control.reset(name)

    def hang(self, seconds: float) -> None:
        self.hung_at = time.time()
        self.control.set_fault(BIG, "hang", seconds=seconds)

    def calls_during(self, start: float, seconds: float) -> int:
        """Chat requests the 70B received from `start` (unix time) for `seconds`: while it hung, each one hung."""
        records = self.control.stats(BIG)["records"]
        return sum(1 for r in records
                   if r["path"].endswith("/chat/completions") and start <= r["time"] < start + seconds)

    def stop(self) -> None:
        self.control.close()
        self.proc.stop()


def _llmpool_chat(client: Client, job_id: str, sent: float, sent_unix: float) -> tuple[Chat, list[dict[str, Any]]]:
    try:
        result = client.result(job_id, timeout=300)
    except LLMPoolError as exc:
        return Chat(sent=sent, latency=None, error=exc.code), []
    record = client.record(job_id) or {}
    hedges = [h for h in record.get("history", []) if h.get("event") == "hedge"]
    latency = float(record["finished_at"]) - sent_unix
    return Chat(sent=sent, latency=latency, endpoint=WHO.get(result.endpoint, "?")), hedges


def run_llmpool(plan: Plan, mock: Mock, tmp: Path) -> tuple[list[Chat], float, dict[str, int]]:
    """The plan through one real worker with the default settings; the chats, hang start, hedge counts."""
    with RedisServer(data_dir=tmp / "redis", appendonly=False) as server:
        env = clean_env(redis_url=server.url, agent_backend_url=mock.control.backend_url,
                        agent_fallback_to_local="false")
        worker = start_worker(tmp, env, name="hung", concurrency=64, loglevel="WARNING")
        client, redis_client = Client(server.url), sync_client(server.url, master_name="mymaster")
        try:
            registry = Registry(redis_client, Keys())
            wait_for(lambda: (s := registry.selection()) is not None and len(s.order) == 2, timeout=30,
                     what="both containers selected")
            sent: list[tuple[str, float, float]] = []
            t0, hang_started = time.monotonic(), -1.0
            for index in range(plan.chats):
                at = plan.send_at(index)
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                if hang_started < 0 and at >= plan.hang_at:
                    mock.hang(plan.hang_for)
                    hang_started = time.monotonic() - t0
                sent.append((client.submit(f"chat {index}", stream=True).job_id, time.monotonic() - t0, time.time()))
            done = [_llmpool_chat(client, job_id, at, unix) for job_id, at, unix in sent]
        finally:
            client.close()
            redis_client.close()
            worker.stop()
    hedges = [h for _, hs in done for h in hs]
    counts = {"hedges_sent": sum(1 for h in hedges if h.get("state") == "sent"),
              "hedges_won": sum(1 for h in hedges if h.get("won")),
              "hedges_not_sent": sum(1 for h in hedges if h.get("state") != "sent")}
    return [chat for chat, _ in done], hang_started, counts


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hung")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=8.0)
    parser.add_argument("--hang-at", type=float, default=20.0)
    parser.add_argument("--hang-for", type=float, default=20.0)
    args = parser.parse_args()
    plan = Plan(rate=args.rate, duration=args.duration, hang_at=args.hang_at, hang_for=args.hang_for)
    from bench.hung_litellm import ROUTER_TIMEOUT, run_litellm  # LiteLLM only when the bench runs

    tmp = Path(tempfile.mkdtemp(prefix="llmpool-hung-"))
    mock = Mock(tmp)
    report: dict[str, Any] = {"scenario": "hung", "plan": vars(plan)}
    try:
        mock.fresh()
        chats, hang_started, hedges = run_llmpool(plan, mock, tmp)
        hung = mock.calls_during(mock.hung_at, plan.hang_for)
        report["llmpool"] = {**summarize(chats, plan, hang_started=hang_started, hung_calls=hung), **hedges,
                             "settings": "make up defaults: 64 threads, AGENT_FIRST_TOKEN_TIMEOUT 60 s, hedging on"}
        mock.fresh()
        big_url, small_url = mock.control.url(BIG), mock.control.url(SMALL)
        chats, hang_started = run_litellm(plan, big_url=big_url, small_url=small_url,
                                          hang=lambda: mock.hang(plan.hang_for))
        hung = mock.calls_during(mock.hung_at, plan.hang_for)
        report["litellm_router"] = {**summarize(chats, plan, hang_started=hang_started, hung_calls=hung),
                                    "settings": f"two groups, fallbacks 70b -> 8b, timeout={ROUTER_TIMEOUT:g}"}
    finally:
        mock.stop()
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"hung-{int(time.time())}.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
