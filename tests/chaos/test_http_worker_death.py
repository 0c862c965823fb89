"""The issue's own scenario: 40 chats over HTTP against a 6 s LLM, one of two workers SIGKILLed mid-way.

Default lease and sweep settings: every chat is answered within 60 s of the kill plus the LLM's
latency, and each HTTP client gets exactly one answer.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.keys import Keys
from tests.chaos.harness import Chaos
from tests.processes import clean_env, start_api

LLM_SECONDS = 6.0
CHATS = 40


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[tuple[Chaos, str]]:
    spec = ContainerSpec(name="llm", ttft=LLM_SECONDS, tokens_per_second=0)
    with RedisServer(data_dir=tmp_path / "redis") as server, MockLLM(containers=[spec]) as mock:
        env = clean_env(redis_url=server.url, local_llm_host="127.0.0.1", local_llm_port=mock.port("llm"),
                        agent_backend_url=f"http://127.0.0.1:{free_port()}", agent_health_check_interval=3600)
        rig = Chaos(tmp=tmp_path, server=server, mock=mock, env=env)
        api, url = start_api(tmp_path, env)
        try:
            yield rig, url
        finally:
            api.stop()
            rig.close()


@pytest.mark.timeout(200)
@pytest.mark.parametrize("kill_after", [1.0, 4.0])
def test_40_http_chats_survive_a_sigkilled_worker(chaos: tuple[Chaos, str], kill_after: float) -> None:
    rig, url = chaos
    rig.worker("first", concurrency=24)
    doomed = rig.worker("second", concurrency=16)

    def chat(i: int) -> tuple[int, str, float]:
        response = httpx.post(url + "/poll_requests", json={"message": f"chat {i}"},
                              headers={"Accept": "application/json"}, timeout=180)
        return response.status_code, response.json().get("answer", response.text), time.monotonic()

    with ThreadPoolExecutor(max_workers=CHATS) as pool:
        futures = [pool.submit(chat, i) for i in range(CHATS)]
        time.sleep(kill_after)
        doomed.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        outcomes = [f.result() for f in futures]
    assert [code for code, _, _ in outcomes] == [200] * CHATS
    assert sorted(answer.rsplit(": ", 1)[1] for _, answer, _ in outcomes) == sorted(f"chat {i}" for i in range(CHATS))
    slowest = max(done for _, _, done in outcomes) - killed_at
    assert slowest <= 60 + LLM_SECONDS
    rig.submitted = [key.decode().rsplit(":", 1)[1] for key in rig.redis.scan_iter(match=Keys().job("*"))]
    ledger = rig.ledger()
    assert (len(ledger.answered), ledger.double_ends) == (CHATS, [])
    calls = rig.mock.stats("llm")["chat_requests"]
    print(f"\n[chaos] HTTP, worker SIGKILL at {kill_after}s: {CHATS} chats, {ledger.summary()}, "
          f"slowest answer {slowest:.1f}s after the kill, {calls} LLM calls")
