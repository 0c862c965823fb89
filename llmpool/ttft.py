"""Time to first token (TTFT) per endpoint: its recent distribution, and what follows from it. Pure.

Redis keeps each endpoint's recent TTFTs (`ttft:{ep}`, written by `llmpool/lua/first_token.lua`
through the Admitter) as a fixed-bucket histogram: BUCKETS buckets growing by RATIO from BASE
seconds (the last holds everything slower), in two generations of AGENT_TTFT_WINDOW seconds, so it
remembers the calls of the last one to two windows and never grows. Each first token recomputes
p50, p95 and p99 there: the upper bound of the bucket that holds the rank, so at most 25% above
the true value, never below it. A call that never got a token adds nothing: a hang does not teach
the endpoint that hanging is normal.

What follows, the same for every worker:
- `first_token_timeout`: how long a call waits for its first token before it fails over:
  AGENT_FIRST_TOKEN_FACTOR x p99, at least AGENT_FIRST_TOKEN_FLOOR, at most
  AGENT_FIRST_TOKEN_TIMEOUT (the ceiling, also used while the endpoint is cold: fewer than
  AGENT_TTFT_MIN_SAMPLES samples). A half-open trial waits twice as long for each failed trial
  before it (up to the ceiling), so an endpoint that became slower than its history gets back.
- `suspect_after`: how long the endpoint may leave calls unanswered (one waiting call, or calls
  each cut short with no token, one after another), with no progress anywhere on it, before
  admission suspects it of hanging (admit.lua computes the same): AGENT_SUSPECT_FACTOR x p99
  within [AGENT_SUSPECT_FLOOR, AGENT_SUSPECT_MAX]; the max while cold.
- overdue (admit.lua only): AGENT_OVERDUE_FACTOR (1) x p99 without a first token
  while a call waits (or calls were cut short lately), warm only: a job with another candidate
  goes there first; no breaker change.
- `hedge_after`: the p95 a hedged job waits before it sends its request to the next candidate;
  None while cold (nothing known about the endpoint: no hedge before the first-token timeout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llmpool.settings import Settings

__all__ = ["BASE", "RATIO", "BUCKETS", "TtftConfig", "TtftSummary", "ttft_config", "bucket_of", "bucket_bound",
           "percentile", "first_token_timeout", "suspect_after", "hedge_after", "ttft_figures"]

BASE = 0.005  # seconds: the first bucket's upper bound
RATIO = 1.25  # each bucket's bound is 25% above the one before
BUCKETS = 48  # up to ~3 min (BASE * RATIO ** 47); the last bucket also holds anything slower


@dataclass(frozen=True)
class TtftConfig:
    """The settings the histogram's readers need (AGENT_TTFT_*, AGENT_FIRST_TOKEN_*, AGENT_SUSPECT_*)."""

    window: float = 300.0  # seconds of one histogram generation
    min_samples: int = 20  # fewer: the endpoint is cold
    timeout_factor: float = 4.0
    timeout_floor: float = 3.0
    timeout_ceiling: float = 60.0  # AGENT_FIRST_TOKEN_TIMEOUT
    suspect_factor: float = 3.0
    suspect_floor: float = 2.0
    suspect_max: float = 30.0
    suspect_wait: float = 1.0  # a suspected endpoint's first open wait, before its trial
    # Overdue (admit.lua; AGENT_OVERDUE_FACTOR, 0 = off): silent for this many p99s with a call
    # waiting. 1: the p99 is a bucket's upper bound, up to 25% above the true one, and every call
    # sent to a hung endpoint meanwhile is one that fails (bench failover: 2 at 20 jobs/s; 5 at 2).
    overdue_factor: float = 1.0


def ttft_config(settings: Settings) -> TtftConfig:
    """The TTFT configuration from the settings."""
    return TtftConfig(
        window=settings.agent_ttft_window, min_samples=settings.agent_ttft_min_samples,
        timeout_factor=settings.agent_first_token_factor, timeout_floor=settings.agent_first_token_floor,
        timeout_ceiling=settings.agent_first_token_timeout, suspect_factor=settings.agent_suspect_factor,
        suspect_floor=settings.agent_suspect_floor, suspect_max=settings.agent_suspect_max,
        suspect_wait=settings.agent_suspect_wait, overdue_factor=settings.agent_overdue_factor,
    )


@dataclass(frozen=True)
class TtftSummary:
    """What Redis knows of one endpoint's recent TTFTs; percentiles in seconds, None when no sample."""

    samples: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    progress_at: float | None = None  # unix time of its last first token or answer (or load signal)

    def warm(self, config: TtftConfig) -> bool:
        return self.samples >= config.min_samples and self.p99 is not None

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> TtftSummary:
        """From the hash's `samples`, `p50`, `p95`, `p99`, `progress_at` fields (text or numbers)."""
        def number(name: str) -> float | None:
            value = fields.get(name)
            return float(value) if value not in (None, "", b"") else None

        return cls(samples=int(number("samples") or 0), p50=number("p50"), p95=number("p95"), p99=number("p99"),
                   progress_at=number("progress_at"))


def bucket_bound(index: int) -> float:
    """The upper bound of bucket `index`, in seconds."""
    return BASE * RATIO ** index


def bucket_of(seconds: float) -> int:
    """The bucket a TTFT falls in (first_token.lua computes the same)."""
    if seconds <= BASE:
        return 0
    return min(BUCKETS - 1, math.ceil(math.log(seconds / BASE) / math.log(RATIO) - 1e-9))


def percentile(counts: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding rank ceil(q * n) of the samples; None without samples."""
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return bucket_bound(index)
    return bucket_bound(len(counts) - 1)


def first_token_timeout(summary: TtftSummary, config: TtftConfig, *, failed_trials: int = 0,
                        trial: bool = False) -> float:
    """Seconds a call to this endpoint waits for its first token (see the module docstring)."""
    if not summary.warm(config):
        return config.timeout_ceiling
    assert summary.p99 is not None
    timeout = max(config.timeout_factor * summary.p99, config.timeout_floor)
    if trial:
        timeout *= 2 ** max(0, min(failed_trials, 30))
    return min(timeout, config.timeout_ceiling)


def suspect_after(summary: TtftSummary, config: TtftConfig) -> float:
    """Seconds without a first token, and without progress, before the endpoint is suspected of hanging."""
    if not summary.warm(config):
        return config.suspect_max
    assert summary.p99 is not None
    return min(max(config.suspect_factor * summary.p99, config.suspect_floor), config.suspect_max)


def hedge_after(summary: TtftSummary, config: TtftConfig) -> float | None:
    """The endpoint's p95 TTFT, which a hedged job waits out before hedging; None while cold."""
    return summary.p95 if summary.warm(config) else None


def ttft_figures(summary: TtftSummary, config: TtftConfig, *, now: float, awaiting: int,
                 oldest_started: float | None) -> dict[str, Any]:
    """One endpoint's TTFT figures for /status, `llmpool status` and a metrics exporter (plain numbers)."""
    return {
        "samples": summary.samples, "warm": summary.warm(config),
        "p50": summary.p50, "p95": summary.p95, "p99": summary.p99,
        "first_token_timeout": first_token_timeout(summary, config), "suspect_after": suspect_after(summary, config),
        "hedge_after": hedge_after(summary, config),
        "awaiting_first_token": awaiting,  # calls in flight with no token yet
        "longest_wait": max(0.0, now - oldest_started) if oldest_started is not None else 0.0,
        "since_progress": max(0.0, now - summary.progress_at) if summary.progress_at is not None else None,
    }
