"""Fleet-wide admission: breaker permit, pause, concurrency lease and GCRA rate limits in Redis.

Every worker on every host shares one state per endpoint, and every decision is one Lua script
timed by Redis' own clock (`llmpool/lua/admit.lua`, `settle.lua`): two workers can never both
take the one half-open trial, and nothing is taken when any part refuses. See DESIGN.md, "The
three Redis algorithms".

Choices worth knowing:
- A rate limit of L per period with burst B lets B calls through at once, then one per period/L;
  any window of one period sees at most L + B calls.
- The token limit's burst is the same share of its period as the request burst:
  B * tpm / rpm tokens, or B * tpm / 100 without an rpm. A call reserving more tokens than that
  still passes once the limit is idle, and is charged in full (the limit holds over time).
- A refused call is told when to retry; where Redis cannot know (a slot frees when any call ends,
  a trial ends when it ends) the wait is capped at POLL_CAP.
- Suspicion (llmpool.ttft): every admitted call is marked as waiting for its first token
  (`awaiting:{ep}`) until `first_token` or settle; an endpoint whose oldest waiting call has
  waited past its usual TTFT while nothing on it made progress is suspected in admit.lua: its
  breaker opens (`opened_by` suspect) for AGENT_SUSPECT_WAIT, then one trial decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import redis

from llmpool.breaker import BreakerConfig, BreakerState, breaker_config, breaker_stats
from llmpool.codec import as_text
from llmpool.endpoints import Endpoint
from llmpool.keys import Keys
from llmpool.scripts import ScriptCall, register
from llmpool.settings import Settings
from llmpool.ttft import (
    BASE,
    BUCKETS,
    RATIO,
    TtftConfig,
    TtftSummary,
    first_token_timeout,
    hedge_after,
    ttft_figures,
)

__all__ = ["Limits", "BreakerConfig", "Admission", "Admitter", "Outcome", "Reason", "Settlement", "Transition",
           "breaker_config",
           "limits_for", "POLL_CAP", "PROBE_SUFFIX"]

Outcome = Literal["success", "failure", "down", "neutral"]  # down: connection refused (settle.lua)
Reason = Literal["ok", "open", "suspect", "trial_busy", "probing", "overdue", "paused", "concurrency", "probation",
                 "rpm", "tpm"]
Transition = Literal["opened", "reopened", "closed", ""]
PROBE_SUFFIX = "#probe"  # a probe holds the trial a job won under the job id + this (admit.lua)
POLL_CAP = 1.0  # seconds: the longest retry_after given when the real wait cannot be known
BREAKER_TTL = 86_400  # an endpoint's breaker is forgotten after a day without a settled call
TOKEN_BURST_CALLS = 100  # without an rpm, the token burst is B/100 of the tpm
DEFAULT_TTFT = TtftConfig()


@dataclass(frozen=True)
class Limits:
    """One endpoint's admission limits; 0 means unlimited."""

    max_concurrency: int = 0
    rpm: int = 0  # requests per period
    tpm: int = 0  # tokens per period
    burst: int = 2  # GCRA burst B, in requests: B calls may pass at once
    period: float = 60.0  # seconds

    def __post_init__(self) -> None:
        if min(self.max_concurrency, self.rpm, self.tpm) < 0 or self.burst < 1 or self.period <= 0:
            raise ValueError(f"bad limits: {self}")

    @property
    def token_burst(self) -> int:
        """The tpm limit's burst, in tokens (see the module docstring)."""
        return max(1, math.ceil(self.burst * self.tpm / (self.rpm or TOKEN_BURST_CALLS)))


@dataclass(frozen=True)
class Admission:
    allowed: bool
    trial: bool  # this caller holds the one half-open trial, fleet-wide
    reason: Reason
    retry_after: float  # seconds until it could pass (0 when allowed)
    first_token_timeout: float | None = None  # this call's wait for a first token, if shorter than the setting
    hedge_after: float | None = None  # the endpoint's p95 TTFT; None while it is cold (llmpool.ttft)


@dataclass(frozen=True)
class Settlement:
    state: BreakerState  # the breaker after the call
    transition: Transition  # what this call did to it: one call, fleet-wide, makes each transition


class Admitter:
    """Admits and settles calls to endpoints; the only writer of breaker and admission keys."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._admit = register(client, "admit")
        self._settle = register(client, "settle")
        self._pause = register(client, "pause")
        self._refresh = register(client, "lease_refresh")
        self._in_flight = register(client, "in_flight")
        self._stats = register(client, "stats")
        self._first_token = register(client, "first_token")
        self._progress = register(client, "progress")

    def admit(self, endpoint_id: str, job_id: str, *, tokens: int, limits: Limits, breaker: BreakerConfig,
              lease: float, ttft: TtftConfig = DEFAULT_TTFT, fallback: bool = False,
              probe_trials: bool = False) -> Admission:
        """Take breaker permission, a concurrency lease and rate tokens for one call, or none of them.

        The endpoint is suspected of hanging first if it has earned it (module docstring); an
        admitted call gets its first-token timeout and hedge delay from the endpoint's TTFTs.
        `fallback`: the caller has another candidate, so an overdue endpoint refuses it ("overdue").
        `probe_trials`: a trial this call wins is held by its probe, `job_id` + PROBE_SUFFIX.
        """
        keys, args = self.admit_call(endpoint_id, job_id, tokens=tokens, limits=limits, breaker=breaker,
                                     lease=lease, ttft=ttft, fallback=fallback, probe_trials=probe_trials)
        return self.admission(self._admit(keys=keys, args=args), ttft=ttft)

    def admit_call(self, endpoint_id: str, job_id: str, *, tokens: int, limits: Limits, breaker: BreakerConfig,
                   lease: float, ttft: TtftConfig = DEFAULT_TTFT, fallback: bool = False,
                   probe_trials: bool = False) -> tuple[list[str], list[Any]]:
        """admit.lua's keys and args, for a caller that sends them inside another script (job_start.lua)."""
        k = self.keys
        keys = [k.breaker(endpoint_id), k.breaker_trial(endpoint_id), k.leases(endpoint_id),
                k.rate(endpoint_id, "rpm"), k.rate(endpoint_id, "tpm"), k.pause(endpoint_id),
                k.awaiting(endpoint_id), k.ttft(endpoint_id)]
        args = [job_id, max(0, tokens), lease, limits.max_concurrency, limits.rpm, limits.tpm, limits.burst,
                limits.token_burst, limits.period, breaker.trial_lease, POLL_CAP, breaker.max_failures,
                ttft.suspect_factor, ttft.suspect_floor, ttft.suspect_max, ttft.suspect_wait, ttft.min_samples,
                BREAKER_TTL, ttft.overdue_factor if fallback else 0,  # 0: never overdue
                PROBE_SUFFIX if probe_trials else ""]
        return keys, args

    @staticmethod
    def admission(reply: list[Any], *, ttft: TtftConfig = DEFAULT_TTFT) -> Admission:
        """admit.lua's reply as an Admission."""
        allowed, trial, reason, retry, samples, p95, p99, failed_trials = reply
        summary = TtftSummary.from_fields({"samples": as_text(samples), "p95": as_text(p95), "p99": as_text(p99)})
        timeout = first_token_timeout(summary, ttft, trial=bool(trial), failed_trials=int(failed_trials))
        # At the ceiling the call keeps AGENT_FIRST_TOKEN_TIMEOUT's own meaning (a per-read timeout).
        return Admission(bool(allowed), bool(trial), as_text(reason), max(0.0, float(retry)),  # type: ignore[arg-type]
                         first_token_timeout=timeout if timeout < ttft.timeout_ceiling else None,
                         hedge_after=hedge_after(summary, ttft))

    def first_token(self, endpoint_id: str, job_id: str, seconds: float, *, ttft: TtftConfig = DEFAULT_TTFT) -> int:
        """A call's first token came after `seconds`: its wait ends and the TTFT is recorded; samples after."""
        keys = [self.keys.awaiting(endpoint_id), self.keys.ttft(endpoint_id)]
        return int(self._first_token(keys=keys, args=[job_id, max(0.0, seconds), ttft.window, BASE, RATIO, BUCKETS]))

    def note_progress(self, endpoint_id: str, *, ttft: TtftConfig = DEFAULT_TTFT) -> None:
        """The endpoint is seen working (its own load signals): no suspicion for a while.

        The hook for servers that report load (vLLM's metrics, say): a prober that sees the
        server generating calls this, so a server slow under a deep queue is never suspected.
        """
        self._progress(keys=[self.keys.ttft(endpoint_id)], args=[ttft.window])

    def settle(self, endpoint_id: str, job_id: str, *, outcome: Outcome, trial: bool, reserved_tokens: int,
               used_tokens: int | None, duration: float, limits: Limits, breaker: BreakerConfig,
               ttft: TtftConfig = DEFAULT_TTFT) -> BreakerState:
        """Record a call's outcome in the breaker, free its lease, true up its tokens; the breaker state after."""
        return self.settle_call(endpoint_id, job_id, outcome=outcome, trial=trial, reserved_tokens=reserved_tokens,
                                used_tokens=used_tokens, duration=duration, limits=limits, breaker=breaker,
                                ttft=ttft).state

    def settle_call(self, endpoint_id: str, job_id: str, *, outcome: Outcome, trial: bool, reserved_tokens: int,
                    used_tokens: int | None, duration: float, limits: Limits, breaker: BreakerConfig,
                    ttft: TtftConfig = DEFAULT_TTFT) -> Settlement:
        """`settle`, also saying which breaker transition this call made (each is made by one call only)."""
        call = self.settle_later(endpoint_id, job_id, outcome=outcome, trial=trial, reserved_tokens=reserved_tokens,
                                 used_tokens=used_tokens, duration=duration, limits=limits, breaker=breaker,
                                 ttft=ttft)
        return self.settlement(call.script(keys=call.keys, args=call.args))

    def settle_later(self, endpoint_id: str, job_id: str, *, outcome: Outcome, trial: bool, reserved_tokens: int,
                     used_tokens: int | None, duration: float, limits: Limits, breaker: BreakerConfig,
                     ttft: TtftConfig = DEFAULT_TTFT) -> ScriptCall:
        """`settle_call` as a script call to send along with other writes (llmpool.scripts.send_together);
        its reply reads with `settlement`."""
        if outcome == "success" and 0 < breaker.slow_call < duration:
            outcome = "failure"  # a slow success is a failure when the breaker is told to care
        k = self.keys
        keys = [k.breaker(endpoint_id), k.breaker_trial(endpoint_id), k.leases(endpoint_id),
                k.rate(endpoint_id, "tpm"), k.awaiting(endpoint_id), k.ttft(endpoint_id)]
        used = "" if used_tokens is None else max(0, used_tokens)
        args = [job_id, outcome, int(trial), max(0, reserved_tokens), used, limits.tpm, limits.period,
                breaker.max_failures, breaker.window, breaker.failure_rate, breaker.min_calls,
                breaker.open_wait, breaker.open_wait_max, BREAKER_TTL, ttft.window, ttft.min_samples]
        return ScriptCall(self._settle, keys, args)

    @staticmethod
    def settlement(reply: list[Any]) -> Settlement:
        """settle.lua's reply as a Settlement."""
        state, transition = reply
        return Settlement(as_text(state), as_text(transition))  # type: ignore[arg-type]

    def pause(self, endpoint_id: str, seconds: float) -> None:
        """Deny every admit on the endpoint ("paused") for `seconds`, unless paused longer already."""
        ms = math.ceil(seconds * 1000)
        if ms > 0:
            self._pause(keys=[self.keys.pause(endpoint_id)], args=[ms])

    def refresh_lease(self, endpoint_id: str, job_id: str, lease: float) -> bool:
        """Extend a long call's lease (and its trial); False if the lease had already expired."""
        keys = [self.keys.leases(endpoint_id), self.keys.breaker_trial(endpoint_id), self.keys.awaiting(endpoint_id)]
        return bool(self._refresh(keys=keys, args=[job_id, lease]))

    def refresh_leases(self, calls: list[tuple[str, str]], lease: float) -> None:
        """`refresh_lease` for many (endpoint id, job id) calls in one pipeline, not one trip each."""
        if not calls:
            return
        pipe = self.redis.pipeline(transaction=False)
        for endpoint_id, job_id in calls:
            self._refresh(keys=[self.keys.leases(endpoint_id), self.keys.breaker_trial(endpoint_id),
                                self.keys.awaiting(endpoint_id)], args=[job_id, lease], client=pipe)
        pipe.execute()

    def in_flight(self, endpoint_ids: list[str]) -> dict[str, int]:
        """Live leases per endpoint, in one round trip."""
        if not endpoint_ids:
            return {}
        counts = self._in_flight(keys=[self.keys.leases(e) for e in endpoint_ids])
        return {e: int(n) for e, n in zip(endpoint_ids, counts, strict=True)}

    def stats(self, endpoint_ids: list[str], *, ttft: TtftConfig = DEFAULT_TTFT) -> dict[str, dict[str, Any]]:
        """Breaker, admission and TTFT state per endpoint, read at one instant, in one round trip."""
        if not endpoint_ids:
            return {}
        k = self.keys
        keys = [key for e in endpoint_ids
                for key in (k.breaker(e), k.breaker_trial(e), k.leases(e), k.pause(e), k.awaiting(e), k.ttft(e))]
        raw = self._stats(keys=keys)
        now = float(raw[0])
        result = {}
        for n, endpoint_id in enumerate(endpoint_ids):
            fields, trial_ms, live, pause_ms, awaiting, oldest, times = raw[1 + 7 * n: 8 + 7 * n]
            flat = [as_text(v) for v in fields]
            stats = breaker_stats(dict(zip(flat[::2], flat[1::2], strict=True)), now=now,
                                  trial_left=max(0, int(trial_ms)) / 1000)
            stats.update(in_flight=int(live), paused_for=max(0, int(pause_ms)) / 1000)
            names = ("samples", "p50", "p95", "p99", "progress_at")
            summary = TtftSummary.from_fields(dict(zip(names, (as_text(v) for v in times), strict=True)))
            stats["ttft"] = ttft_figures(summary, ttft, now=now, awaiting=int(awaiting),
                                         oldest_started=float(oldest) if as_text(oldest) else None)
            result[endpoint_id] = stats
        return result

    def reset(self, endpoint_id: str) -> None:
        """Forget everything about an endpoint: breaker, trial, leases, rates, pause, first-token waits, TTFTs."""
        k = self.keys
        self.redis.delete(k.breaker(endpoint_id), k.breaker_trial(endpoint_id), k.leases(endpoint_id),
                          k.rate(endpoint_id, "rpm"), k.rate(endpoint_id, "tpm"), k.pause(endpoint_id),
                          k.awaiting(endpoint_id), k.ttft(endpoint_id))


def limits_for(endpoint: Endpoint, settings: Settings, *, fleet_slots: int = 0) -> Limits:
    """The endpoint's limits: defaults, then the first model-name match, then its id in AGENT_ENDPOINT_LIMITS.

    An endpoint whose server told its parallel slots (Endpoint.slots) is capped at them, unless an
    override gives its max_concurrency.

    Without a max_concurrency of its own (0 after the overrides), an endpoint may hold at most its
    share (AGENT_ENDPOINT_SHARE, or "share" in an override) of `fleet_slots`, the fleet's chat
    slots; 0 slots (unknown, or nothing else to run on: llmpool.share) means no share applies.
    """
    values: dict[str, Any] = {"max_concurrency": settings.agent_endpoint_max_concurrency,
                              "rpm": settings.agent_endpoint_rpm, "tpm": settings.agent_endpoint_tpm,
                              "share": settings.agent_endpoint_share}
    overrides = settings.agent_endpoint_limits
    names = (endpoint.model_name.lower(), endpoint.model.lower())
    by_model = next((o for key, o in overrides.items() if any(key.lower() in n for n in names)), None)
    chosen = [o for o in (by_model, overrides.get(endpoint.id)) if o is not None]
    for override in chosen:
        values.update(override.model_dump(exclude_none=True))
    if endpoint.slots and not any(o.max_concurrency is not None for o in chosen):
        # A server that runs N requests at once (llama.cpp's slots) queues the rest out of our
        # sight: N is its cap unless AGENT_ENDPOINT_LIMITS names one for it.
        values["max_concurrency"] = min(values["max_concurrency"] or endpoint.slots, endpoint.slots)
    share = values.pop("share")
    if not values["max_concurrency"] and fleet_slots > 0 and share < 1:
        values["max_concurrency"] = max(1, math.floor(share * fleet_slots))
    return Limits(**values, burst=settings.agent_rate_burst, period=settings.agent_rate_period)
