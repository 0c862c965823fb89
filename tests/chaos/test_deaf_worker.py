"""A worker that stops consuming while its queue holds messages stops itself, so it can be restarted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from llmpool.client import producer_config
from llmpool.settings import load_settings
from tests.chaos.harness import Chaos, open_chaos
from tests.processes import wait_for


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    with open_chaos(tmp_path, llm_seconds=0.05, agent_deaf_after=3, agent_sweep_interval=1) as rig:
        yield rig


@pytest.mark.timeout(90)
def test_a_worker_that_stops_consuming_stops_itself(chaos: Chaos) -> None:
    worker = chaos.worker("deaf", concurrency=4)
    hostname = worker.argv[worker.argv.index("-n") + 1]
    app = Celery("chaos-control", set_as_current=False)
    app.conf.update(producer_config(load_settings(redis_url=chaos.server.url)))
    # Connected and alive, but no longer reading chat.default: deaf, as after the kombu bugs.
    wait_for(lambda: bool(app.control.cancel_consumer("chat.default", destination=[hostname], reply=True,
                                                       timeout=2)), timeout=20, what="the consumer cancelled")
    chaos.submit(1)
    wait_for(lambda: not worker.alive(), timeout=30, what="the deaf worker to stop itself")
    assert "deaf worker:" in worker.log_tail(200)
    chaos.worker("fresh", concurrency=4)  # what its supervisor does
    chaos.wait_finished(timeout=30)
    assert len(chaos.ledger().answered) == 1
    app.close()
