"""Endpoint health: the state machine that turns probe results into healthy / degraded / unhealthy.

Pure: no I/O, and time is passed in. The TT-Studio agent's rule decides one probe (HTTP 200 in under
2 s is healthy, a slower 200 degraded, anything else a failure); on top of it llmpool adds
hysteresis, so one lost probe does not drop an endpoint and one lucky probe does not bring a dead
one back:

- unknown: a new endpoint. One success makes it healthy/degraded at once; `max_failures`
  consecutive failures make it unhealthy; fewer leave it unknown.
- healthy/degraded: each success picks between the two by latency (no hysteresis between them);
  `max_failures` consecutive failures make it unhealthy, fewer keep the state.
- unhealthy: `recovery_successes` consecutive successes bring it back; a failure restarts the count.
- starting: the server says it is loading its model (llama.cpp's 503 "Loading model", an LM Studio
  model not loaded: llmpool.prober). Not selectable, yet not a failure: from any state such a
  probe makes it starting with its counters cleared, so a loading server is never marked
  unhealthy, and its first success after loading makes it healthy at once, as a new endpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

__all__ = [
    "HealthState", "SELECTABLE", "ProbeResult", "Health", "next_health", "assumed_healthy",
    "probe_state",
]

HealthState = Literal["unknown", "healthy", "degraded", "unhealthy", "starting"]
SELECTABLE: tuple[HealthState, ...] = ("healthy", "degraded")
STATES: tuple[str, ...] = get_args(HealthState)
DEGRADED_AFTER = 2.0  # seconds; the TT-Studio agent's threshold


@dataclass(frozen=True)
class ProbeResult:
    """What one health probe saw."""

    ok: bool  # got HTTP 200
    latency: float  # seconds
    status: int | None = None
    error: str | None = None  # short, secret-free
    url: str | None = None  # what was probed
    starting: bool = False  # not ok, but the server says it is loading its model (not a failure)


@dataclass(frozen=True)
class Health:
    """An endpoint's health: its state, the counters behind it, and what the last probe saw."""

    state: HealthState = "unknown"
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_check: float | None = None
    latency: float | None = None  # seconds the last probe took, success or not
    last_error: str | None = None
    since: float | None = None  # when `state` last changed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Health:
        """Rebuild a stored health; missing keys take defaults, unknown keys are ignored."""
        # Tolerant of string values too (a Redis hash written field by field stores text).
        state = data.get("state")
        return cls(
            state=state if state in STATES else "unknown",
            consecutive_failures=int(_number(data.get("consecutive_failures")) or 0),
            consecutive_successes=int(_number(data.get("consecutive_successes")) or 0),
            last_check=_number(data.get("last_check")),
            latency=_number(data.get("latency")),
            last_error=str(data["last_error"]) if data.get("last_error") is not None else None,
            since=_number(data.get("since")),
        )

    @property
    def selectable(self) -> bool:
        """Whether jobs may be sent to an endpoint in this state."""
        return self.state in SELECTABLE


def _number(value: Any) -> float | None:
    """`value` as a float, or None when it is absent or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def probe_state(probe: ProbeResult, *, degraded_after: float = DEGRADED_AFTER) -> HealthState:
    """The TT-Studio verdict on one probe: healthy, degraded (slow 200) or unhealthy."""
    if not probe.ok:
        return "unhealthy"
    return "healthy" if probe.latency < degraded_after else "degraded"


def next_health(prev: Health, probe: ProbeResult, *, now: float, max_failures: int,
                recovery_successes: int, degraded_after: float = DEGRADED_AFTER) -> Health:
    """The health after `probe`, applied to `prev` at time `now` (see the module docstring)."""
    seen = replace(prev, last_check=now, latency=probe.latency)
    if probe.starting and not probe.ok:
        return replace(seen, state="starting", consecutive_failures=0, consecutive_successes=0,
                       last_error=probe.error or "starting", since=_since(prev, "starting", now))
    if probe.ok:
        return _after_success(seen, probe_state(probe, degraded_after=degraded_after), now=now,
                              recovery_successes=recovery_successes)
    return _after_failure(seen, probe, now=now, max_failures=max_failures)


def _after_success(prev: Health, verdict: HealthState, *, now: float,
                   recovery_successes: int) -> Health:
    successes = prev.consecutive_successes + 1
    state = verdict
    if prev.state == "unhealthy" and successes < recovery_successes:
        state = "unhealthy"
    # The error is history once the endpoint is usable again; a blip while healthy stays visible.
    coming_back = state in SELECTABLE and not prev.selectable
    return replace(
        prev, state=state, consecutive_failures=0, consecutive_successes=successes,
        last_error=None if coming_back else prev.last_error, since=_since(prev, state, now),
    )


def _after_failure(prev: Health, probe: ProbeResult, *, now: float, max_failures: int) -> Health:
    failures = prev.consecutive_failures + 1
    state: HealthState = "unhealthy" if failures >= max_failures else prev.state
    error = probe.error or (f"HTTP {probe.status}" if probe.status is not None else "failed")
    return replace(
        prev, state=state, consecutive_failures=failures, consecutive_successes=0,
        last_error=error, since=_since(prev, state, now),
    )


def _since(prev: Health, state: HealthState, now: float) -> float | None:
    return now if state != prev.state else prev.since


def assumed_healthy(now: float) -> Health:
    """The health of an endpoint nobody probes (checks disabled, or a cloud endpoint)."""
    return Health(state="healthy", last_check=now, since=now)
