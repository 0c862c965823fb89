"""What one job run, or one sweep pass, adds to the fleet's metrics: plain functions, no I/O.

A run ends in one of three ways: it ended the job (succeeded, failed, expired), it parked the job to
wait in Redis, or another run had ended it already. Its calls, failovers and refusals count in
every case; the job itself counts once, in the run that ended it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmpool.metrics.catalog import (
    CALL_FAILURES,
    FAILOVERS,
    HEDGES,
    JOB_LATENCY,
    JOBS,
    NO_ENDPOINT,
    QUEUE_WAIT,
    REFUSALS,
    SWEEP_RECOVERIES,
    TOKENS,
    TOKENS_PER_SECOND,
    TTFT,
    bounded_code,
)
from llmpool.metrics.store import Batch

__all__ = ["RunFacts", "run_batch", "calls_batch", "end_batch", "sweep_batch"]


@dataclass(frozen=True)
class RunFacts:
    """One run of a chat job, as the metrics see it."""

    queue: str
    ended: str | None = None  # the final state this run wrote; None: parked, or ended by another run
    error: str = ""  # the error type when the job failed or expired
    result: Mapping[str, Any] | None = None  # the ChatResult as JSON, when it succeeded
    failures: Sequence[Mapping[str, object]] = ()  # RunReport.failures
    refusals: Sequence[Mapping[str, object]] = ()  # RunReport.refusals
    failovers: Sequence[str] = ()  # RunReport.failovers: endpoints that failed and were left
    hedges: Sequence[Mapping[str, object]] = ()  # RunReport.hedges (llmpool.hedging.Race.record)
    queue_wait: float | None = None  # submit to first claim: given by the job's first run only
    latency: float | None = None  # submit to end, when this run ended the job


def _endpoint(facts: RunFacts) -> str:
    """The endpoint a job is counted under: the one that answered, else the last that failed."""
    if facts.result is not None:
        return str(facts.result.get("endpoint") or NO_ENDPOINT)
    if facts.failures:
        return str(facts.failures[-1].get("endpoint") or NO_ENDPOINT)
    return NO_ENDPOINT


def _success(batch: Batch, result: Mapping[str, Any]) -> None:
    endpoint = str(result.get("endpoint") or NO_ENDPOINT)
    usage = result.get("usage") or {}
    batch.count(TOKENS, (endpoint, "in"), int(usage.get("prompt_tokens") or 0))
    batch.count(TOKENS, (endpoint, "out"), int(usage.get("completion_tokens") or 0))
    timings = result.get("timings") or {}
    if timings.get("ttft") is not None:
        batch.observe(TTFT, (endpoint,), float(timings["ttft"]))
    if timings.get("tpot"):
        batch.observe(TOKENS_PER_SECOND, (endpoint,), 1.0 / float(timings["tpot"]))


def run_batch(facts: RunFacts) -> Batch:
    """Everything a run adds, for one write."""
    batch = calls_batch(facts)
    batch.merge(end_batch(facts))
    return batch


def calls_batch(facts: RunFacts) -> Batch:
    """What a run adds whoever ended the job: its calls, failures, refusals, tokens, first wait."""
    batch = Batch()
    for failure in facts.failures:
        batch.count(CALL_FAILURES, (str(failure.get("endpoint")), bounded_code(failure.get("type"))))
    for endpoint in facts.failovers:
        batch.count(FAILOVERS, (endpoint,))
    for hedge in facts.hedges:
        outcome = hedge.get("state") if hedge.get("state") != "sent" else ("won" if hedge.get("won") else "lost")
        batch.count(HEDGES, (str(hedge.get("from")), bounded_code(outcome)))
    for refusal in facts.refusals:
        batch.count(REFUSALS, (str(refusal.get("endpoint")), bounded_code(refusal.get("reason"))))
    if facts.queue_wait is not None:
        batch.observe(QUEUE_WAIT, (facts.queue,), max(0.0, facts.queue_wait))
    if facts.result is not None:
        _success(batch, facts.result)
    return batch


def end_batch(facts: RunFacts) -> Batch:
    """The job itself, counted by the run that ended it (`ended`): nothing for any other run."""
    batch = Batch()
    if facts.ended is not None:
        error = bounded_code(facts.error) if facts.error else ""
        batch.count(JOBS, (facts.queue, facts.ended, error, _endpoint(facts)))
        if facts.latency is not None:
            batch.observe(JOB_LATENCY, (facts.queue, facts.ended), max(0.0, facts.latency))
    return batch


def sweep_batch(handed_back: Iterable[tuple[str, str]]) -> Batch:
    """A sweep pass's jobs handed back, as (reason, queue) pairs."""
    batch = Batch()
    for reason, queue in handed_back:
        batch.count(SWEEP_RECOVERIES, (bounded_code(reason), queue))
    return batch
