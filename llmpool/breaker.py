"""The circuit breaker's configuration and how its Redis hash reads as stats.

The transitions themselves are Lua (`llmpool/lua/admit.lua` permits, `settle.lua` moves the
state), so no worker ever read-modify-writes a breaker. The hash holds `state` (closed | open;
half-open is open with its wait elapsed), `consecutive`, `opened_at`, `open_wait`, `trips`,
`width` (seconds per window bucket) and ten buckets `w0`..`w9` = "bucket:calls:failures"; and,
for hung endpoints (llmpool.ttft), `opened_by` (failures | down | suspect, while open: down is a
refused connection), `suspicions` (times admission suspected it) and `failed_trials` (since it last
closed; trials are probes, llmpool.trial_probe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from llmpool.errors import EndpointUnreachable, RetryableError
from llmpool.settings import Settings

__all__ = ["BreakerConfig", "BreakerState", "breaker_config", "breaker_stats", "failure_outcome", "WINDOW_BUCKETS"]

BreakerState = Literal["closed", "open", "half_open"]
WINDOW_BUCKETS = 10  # the failure window slides in steps of window / 10 (settle.lua)


@dataclass(frozen=True)
class BreakerConfig:
    max_failures: int = 3  # consecutive failures that open it (AGENT_MAX_FAILURES)
    window: float = 60.0  # seconds of the sliding window for the failure rate
    failure_rate: float = 0.5  # opens when failures / calls >= this ...
    min_calls: int = 10  # ... and the window holds at least this many calls
    open_wait: float = 2.0  # first open wait; doubles on each failed trial, capped
    open_wait_max: float = 60.0
    trial_lease: float = 30.0  # a half-open trial not settled within this lets another try
    slow_call: float = 0.0  # > 0: a successful call slower than this counts as a failure


def breaker_config(settings: Settings) -> BreakerConfig:
    """The breaker configuration from AGENT_MAX_FAILURES and AGENT_BREAKER_*."""
    return BreakerConfig(
        max_failures=settings.agent_max_failures, window=settings.agent_breaker_window,
        failure_rate=settings.agent_breaker_failure_rate, min_calls=settings.agent_breaker_min_calls,
        open_wait=settings.agent_breaker_open_wait, open_wait_max=settings.agent_breaker_open_wait_max,
        trial_lease=settings.agent_breaker_trial_lease, slow_call=settings.agent_breaker_slow_call,
    )


def failure_outcome(error: RetryableError) -> Literal["failure", "down"]:
    """How a failed call settles: "down" when its connection was refused (nothing listens: settle.lua
    opens the breaker at once), else "failure" (a 5xx or a timeout may pass: max_failures decide)."""
    return "down" if isinstance(error, EndpointUnreachable) and error.details.get("refused") is True else "failure"


def _window(fields: dict[str, str], now: float) -> tuple[int, int]:
    """Calls and failures in the buckets of the current window."""
    if "width" not in fields:
        return 0, 0
    current = math.floor(now / float(fields["width"]))
    calls = failures = 0
    for slot in range(WINDOW_BUCKETS):
        bucket = fields.get(f"w{slot}")
        if bucket is None:
            continue
        idx, n, bad = (int(part) for part in bucket.split(":"))
        if current - WINDOW_BUCKETS < idx <= current:
            calls, failures = calls + n, failures + bad
    return calls, failures


def breaker_stats(fields: dict[str, str], *, now: float, trial_left: float) -> dict[str, Any]:
    """Stats of one breaker hash read at Redis time `now`; `trial_left` is the trial lease's TTL."""
    state: BreakerState = "closed"
    retry_in = 0.0
    if fields.get("state") == "open":
        ready = float(fields["opened_at"]) + float(fields["open_wait"])
        state = "open" if now < ready else "half_open"
        retry_in = max(ready - now, trial_left if state == "half_open" else 0.0)
    calls, failures = _window(fields, now)
    return {
        "state": state, "trips": int(fields.get("trips", 0)), "calls": calls, "failures": failures,
        "success_rate": (calls - failures) / calls if calls else 1.0, "retry_in": retry_in,
        "open_wait": float(fields.get("open_wait", 0.0)),
        "consecutive_failures": int(fields.get("consecutive", 0)), "trial_in_flight": trial_left > 0,
        "suspect": state != "closed" and fields.get("opened_by") == "suspect",
        "suspicions": int(fields.get("suspicions", 0)), "failed_trials": int(fields.get("failed_trials", 0)),
    }
