"""Redis is SIGKILLed with jobs queued and running and restarted from its AOF: every job is answered,
and every worker consumes again (threads pool and prefork)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import FAST_RECOVERY, Chaos, open_chaos
from tests.processes import wait_for

LLM_SECONDS = 2.0
DOWN_SECONDS = 5.0


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    with open_chaos(tmp_path, llm_seconds=LLM_SECONDS, **FAST_RECOVERY) as rig:
        yield rig


@pytest.mark.timeout(200)
@pytest.mark.parametrize(("pool", "concurrency"), [("threads", 8), ("prefork", 4)])
def test_redis_sigkill_and_restart_from_its_aof(chaos: Chaos, pool: str, concurrency: int) -> None:
    worker = chaos.worker("w1", concurrency=concurrency, pool=pool)
    chaos.submit(3 * concurrency)
    wait_for(lambda: chaos.running_on(worker) >= concurrency // 2, timeout=20, what="jobs running")
    time.sleep(1.2)  # the AOF fsyncs every second: what was written a second before the kill is on disk
    chaos.server.kill()
    time.sleep(DOWN_SECONDS)
    chaos.server.start()
    restarted = time.monotonic()
    chaos.submit(concurrency)  # new work after the restart must be heard, not just recovered work
    chaos.wait_finished(timeout=120)
    waited = time.monotonic() - restarted
    assert worker.alive(), worker.log_tail()
    ledger = chaos.ledger()
    assert (len(ledger.answered), ledger.failed, ledger.unfinished, ledger.double_ends) == (
        len(chaos.submitted), {}, [], []), ledger.summary()
    calls = chaos.mock.stats("llm")["chat_requests"]
    print(f"\n[chaos] Redis SIGKILL+restart ({pool}): {len(chaos.submitted)} submitted, {ledger.summary()}, "
          f"all answered {waited:.1f}s after the restart, {calls} LLM calls")
    worker.kill(signal.SIGTERM)
