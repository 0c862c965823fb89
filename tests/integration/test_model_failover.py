"""Failover stays within the job's model and its configured fallbacks (real worker, the mock LLM)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from tests.pool import start_pool

BIG, SMALL, MISTRAL = "Llama-3.1-70B-Instruct", "Llama-3.1-8B-Instruct", "Mistral-7B-Instruct"


def _tried(record: dict[str, Any]) -> list[str]:
    """The endpoints whose calls failed, from the job's attempt history."""
    return [e["endpoint"] for e in record.get("history", []) if e.get("event") == "call_failed"]


def test_a_failing_model_never_fails_over_to_another_unless_configured(tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path / "redis") as server:
        mock = MockLLM(containers=[ContainerSpec(name=n, model_name=m, ttft=0.01)
                                   for n, m in (("big", BIG), ("small", SMALL), ("mistral", MISTRAL))]).start()
        pool = None
        try:
            pool = start_pool(tmp_path, server, mock, workers=1, threads=4,
                              agent_model_fallbacks=json.dumps({SMALL: [BIG]}))
            for name in ("small", "mistral"):
                mock.set_fault(name, "refuse")
                mock.reset(name)
            mock.reset("big")
            [alone] = pool.finished([pool.client.submit("hi", model=MISTRAL).job_id], timeout=30)
            assert alone["state"] == "failed" and alone["error"]["type"] == "all_endpoints_failed", alone
            assert _tried(alone) == [deploy_id("mistral")]
            assert mock.stats("big")["chat_requests"] == 0  # the selected 70B never saw the Mistral job
            [covered] = pool.finished([pool.client.submit("hi", model=SMALL).job_id], timeout=30)
            assert covered["state"] == "succeeded", covered
            assert covered["result"]["endpoint"] == deploy_id("big")  # its configured fallback answered
            assert _tried(covered) == [deploy_id("small")]  # ... after its own endpoint failed
        finally:
            if pool is not None:
                pool.stop()
            mock.stop()
