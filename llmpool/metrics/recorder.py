"""Where workers hand their metrics over: one write per job run or sweep pass, never a failed job.

Metrics are best effort: a write Redis refuses (down, failing over, at maxmemory) is dropped with
a DEBUG line, because the job's own writes, which matter, meet the same Redis and say so louder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis

from llmpool.metrics.runs import RunFacts, calls_batch, end_batch, run_batch, sweep_batch
from llmpool.metrics.store import Batch, MetricCommand, MetricsStore

__all__ = ["MetricsRecorder"]

log = logging.getLogger(__name__)


class MetricsRecorder:
    def __init__(self, store: MetricsStore) -> None:
        self.store = store

    def run_ended(self, facts: RunFacts) -> None:
        """Count one run of a chat job (see llmpool.metrics.runs)."""
        self._write(run_batch(facts))

    def commands(self, facts: RunFacts) -> tuple[list[MetricCommand], list[MetricCommand]]:
        """The run's metrics as commands to send with the job's finish (llmpool.jobs.RunEnd): what any
        run adds, and what only the run that ends the job adds (as if `facts.ended`)."""
        return self.store.commands(calls_batch(facts)), self.store.commands(end_batch(facts))

    def swept(self, handed_back: Iterable[tuple[str, str]]) -> None:
        """Count the jobs one sweep pass handed back, as (reason, queue) pairs."""
        self._write(sweep_batch(handed_back))

    def _write(self, batch: Batch) -> None:
        try:
            self.store.write(batch)
        except redis.RedisError as exc:
            log.debug("metrics not recorded (Redis refused): %s", exc)
