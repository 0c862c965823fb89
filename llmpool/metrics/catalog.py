"""Every metric llmpool exports: its name, kind, help text, labels and histogram buckets.

Two sorts. Counted families are added to by every worker process on every host (one pipelined
write per job run, `llmpool.metrics.store`) and read from Redis by the API at scrape time. Live
families are read from the pool's own state at scrape time (queues, parked jobs, breakers,
health): nothing writes them for the metrics' sake.

Label values are bounded: queues and outcomes are fixed sets, endpoint ids come from the registry
(series of an endpoint that left it are dropped), reasons and error types are llmpool's own codes.
No job id, thread id or message text is ever a label.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Family", "COUNTED", "JOBS", "CALL_FAILURES", "FAILOVERS", "HEDGES", "REFUSALS", "TOKENS",
           "SWEEP_RECOVERIES", "QUEUE_WAIT", "JOB_LATENCY", "TTFT", "TOKENS_PER_SECOND", "LIVE", "BREAKER_STATES",
           "NO_ENDPOINT", "bounded_code", "bucket_of", "format_bound"]

NO_ENDPOINT = "none"  # the endpoint label of a job that ended before any endpoint answered
OTHER = "other"  # a code that does not look like one of ours (never expected; keeps labels bounded)
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


@dataclass(frozen=True)
class Family:
    """One metric family; `name` is the exported name (counters end in `_total`)."""

    name: str
    kind: Literal["counter", "histogram", "gauge"]
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # histogram upper bounds, ascending, without +Inf
    joins_model: bool = False  # the collector adds `model` from the registry after `endpoint`

    @property
    def stem(self) -> str:
        """The name without `_total`: the key it is stored under and prometheus_client's family name."""
        return self.name[: -len("_total")] if self.name.endswith("_total") else self.name

    @property
    def exported_labels(self) -> tuple[str, ...]:
        return (*self.labels, "model") if self.joins_model else self.labels


def bounded_code(value: object) -> str:
    """An error type or refusal reason as a label value: llmpool's codes pass, anything else is `other`."""
    text = str(value)
    return text if _CODE.match(text) else OTHER


def bucket_of(family: Family, value: float) -> str:
    """The bucket an observation is counted in (stored non-cumulative), as its `le` text."""
    for bound in family.buckets:
        if value <= bound:
            return format_bound(bound)
    return "+Inf"


def format_bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


# --- counted: every worker adds, the API reads -----------------------------------------------------

JOBS = Family(
    "llmpool_jobs_total", "counter",
    "Chat jobs that ended, by queue, outcome (succeeded, failed, expired), error type ('' on success), "
    "the endpoint that answered or failed last ('none' if no call was made) and its model.",
    ("queue", "outcome", "error", "endpoint"), joins_model=True)
CALL_FAILURES = Family(
    "llmpool_call_failures_total", "counter",
    "LLM calls that failed in a way that charges the endpoint (timeouts, 5xx, 429, connect errors, cut streams).",
    ("endpoint", "error"))
FAILOVERS = Family(
    "llmpool_failovers_total", "counter",
    "Failed calls after which the job moved on to the next endpoint at once, by the endpoint that failed.",
    ("endpoint",))
HEDGES = Family(
    "llmpool_hedges_total", "counter",
    "Calls that waited past their endpoint's hedge delay (its p95 TTFT) without a token, by that endpoint "
    "and what became of the hedge: won or lost (sent to the next candidate; the first token wins), or not "
    "sent: refused (admission), no_thread (every hedge thread busy), no_budget (no call left), admit_failed.",
    ("endpoint", "outcome"))
REFUSALS = Family(
    "llmpool_admission_refusals_total", "counter",
    "Calls the fleet-wide gate did not let through, by endpoint and reason (open, suspect, trial_busy, "
    "probing (the job won the trial: a probe makes it), overdue, probation, paused, concurrency, rpm, tpm; "
    "no_free_connection is a worker's own HTTP pool).",
    ("endpoint", "reason"))
TOKENS = Family(
    "llmpool_tokens_total", "counter",
    "Tokens of successful calls per endpoint: direction 'in' is the prompt, 'out' the completion.",
    ("endpoint", "direction"))
SWEEP_RECOVERIES = Family(
    "llmpool_sweep_recoveries_total", "counter",
    "Jobs the sweep handed back to their queue: lease_lapsed (the worker running it died), unpublished "
    "(the broker may not have had its message), due (a parked job's wait ended).",
    ("reason", "queue"))
QUEUE_WAIT = Family(
    "llmpool_queue_wait_seconds", "histogram",
    "Seconds from submit to the first worker's claim of the job.",
    ("queue",), buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900))
JOB_LATENCY = Family(
    "llmpool_job_latency_seconds", "histogram",
    "Seconds from submit to the job's end (queue, waits, failovers and calls), by queue and outcome.",
    ("queue", "outcome"), buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800))
TTFT = Family(
    "llmpool_time_to_first_token_seconds", "histogram",
    "Seconds from the start of a successful call to its first token, by endpoint.",
    ("endpoint",), buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60))
TOKENS_PER_SECOND = Family(
    "llmpool_tokens_per_second", "histogram",
    "Output tokens per second of a successful call after its first token (1 / time per output token).",
    ("endpoint",), buckets=(1, 5, 10, 20, 30, 50, 75, 100, 150, 200, 500, 1000))

COUNTED: tuple[Family, ...] = (JOBS, CALL_FAILURES, FAILOVERS, HEDGES, REFUSALS, TOKENS, SWEEP_RECOVERIES,
                               QUEUE_WAIT, JOB_LATENCY, TTFT, TOKENS_PER_SECOND)

# --- live: read from the pool's state at scrape time -------------------------------------------------

LIVE: dict[str, Family] = {f.name: f for f in (
    Family("llmpool_queue_depth", "gauge", "Messages waiting in each Celery queue (chat priorities and control).",
           ("queue",)),
    Family("llmpool_jobs_waiting", "gauge",
           "Jobs parked in Redis, holding no worker: no LLM selected yet, or every endpoint refused them."),
    Family("llmpool_jobs_running", "gauge", "Jobs a worker has claimed and holds a lease on."),
    Family("llmpool_jobs_unpublished", "gauge", "Jobs whose message the broker has not confirmed yet."),
    Family("llmpool_breaker_state", "gauge", "Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open.",
           ("endpoint",)),
    Family("llmpool_breaker_trips_total", "counter",
           "Times the endpoint's breaker opened (kept in its breaker, which Redis forgets after a day unused).",
           ("endpoint",)),
    Family("llmpool_endpoint_in_flight", "gauge", "Calls in flight per endpoint, fleet-wide.", ("endpoint",)),
    Family("llmpool_endpoint_health", "gauge",
           "1 for the endpoint's health state (healthy, degraded, unhealthy, unknown), 0 for the others.",
           ("endpoint", "state")),
    Family("llmpool_endpoint_probe_latency_seconds", "gauge", "Seconds the endpoint's last health probe took.",
           ("endpoint",)),
    Family("llmpool_endpoint_info", "gauge",
           "1 per registered endpoint, with its model, source and rank in the selection (-1: not selected).",
           ("endpoint", "model", "source", "rank")),
    Family("llmpool_endpoint_current", "gauge", "1 for the endpoint jobs go to first now, 0 for the others.",
           ("endpoint",)),
    # Hung endpoints (llmpool.ttft, admit.lua): suspicion and the adaptive first-token timeout.
    Family("llmpool_endpoint_suspect", "gauge",
           "1 while the endpoint is suspected of hanging (calls unanswered past its usual TTFT, no progress).",
           ("endpoint",)),
    Family("llmpool_endpoint_suspicions_total", "counter",
           "Times the endpoint was suspected of hanging (kept in its breaker, which Redis forgets after a day unused).",
           ("endpoint",)),
    Family("llmpool_endpoint_first_token_timeout_seconds", "gauge",
           "The first-token timeout the endpoint's next call gets (from its TTFT history; the setting when cold).",
           ("endpoint",)),
    Family("llmpool_endpoint_ttft_p95_seconds", "gauge",
           "The endpoint's recent p95 time to first token (its hedge delay); absent while it has no history.",
           ("endpoint",)),
    Family("llmpool_endpoint_awaiting_first_token", "gauge",
           "Calls on the endpoint still waiting for their first token, fleet-wide.", ("endpoint",)),
)}
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
