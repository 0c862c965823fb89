"""The issue's own scenario: 40 chats over HTTP against a 6 s LLM, one of two workers SIGKILLed mid-way.

Default lease and sweep settings: every chat is answered within 60 s of the kill plus the LLM's
latency, and each HTTP client gets exactly one answer.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from llmpool.keys import Keys
from tests.chaos.harness import Chaos, open_chaos
from tests.processes import start_api

LLM_SECONDS = 6.0
CHATS = 40


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[tuple[Chaos, str]]:
    with open_chaos(tmp_path, llm_seconds=LLM_SECONDS) as rig:  # default lease and sweep
        api, url = start_api(tmp_path, rig.env)
        try:
            yield rig, url
        finally:
            api.stop()


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
    # the attempt history says what happened, over HTTP and on the command line alike
    recovered = ledger.recovered()[0]
    record = httpx.get(f"{url}/jobs/{recovered}", timeout=10).json()
    events = [e["event"] for e in record["history"]]
    assert events[:2] == ["claimed", "lease_lapsed"] and events[-1] == "succeeded", events
    shown = subprocess.run([sys.executable, "-m", "llmpool.cli", "jobs", "show", recovered], env=rig.env,
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and json.loads(shown.stdout)["history"] == record["history"], shown.stderr
    calls = rig.mock.stats("llm")["chat_requests"]
    print(f"\n[chaos] HTTP, worker SIGKILL at {kill_after}s: {CHATS} chats, {ledger.summary()}, "
          f"slowest answer {slowest:.1f}s after the kill, {calls} LLM calls")
