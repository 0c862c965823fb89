"""Hedged calls: one job's call, and perhaps a second one to the next candidate; the first token wins.

A call that has waited past its endpoint's usual time to first token (the hedge delay) without a
token may be hedged: the same request goes to the next candidate, on a thread of the process's
HedgePool, if a hedge thread is free, the job has a call left in its budget (AGENT_JOB_MAX_CALLS)
and admission admits it (the candidate has spare capacity). At most one hedge per job call. The
first call to produce a token wins and the other is cancelled at once (its socket is shut down,
llmpool.http_deadline.CallCancel); the cancelled call is settled neutral, as an abandoned call, not
as its endpoint's failure. Only the winner publishes tokens, so the job's stream never shows two
answers and needs no `reset`.

When the first call fails before any token the hedge (if sent) simply goes on as the job's next
call; when its first-token wait runs out, a hedge silent past its own endpoint's usual TTFT is
cancelled too, so a job whose two endpoints both stall times out once, not twice in a row. Each
call settles its own admission in its own thread, the moment it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from llmpool.breaker import failure_outcome
from llmpool.endpoints import Endpoint
from llmpool.errors import (
    CallCancelled,
    EndpointStarting,
    EndpointTimeout,
    LLMPoolError,
    LocalShortage,
    RetryableError,
)
from llmpool.hedge_pool import HedgePool, Timer, hedge_threads
from llmpool.http_deadline import CallCancel
from llmpool.llm_client import CallOutcome
from llmpool.settings import Settings

if TYPE_CHECKING:
    from llmpool.runner import Outcome, Ticket

__all__ = ["Hedging", "HedgedAttempt", "Leg", "LegEnd", "Race", "RaceOps", "cold_hedge_delay", "hedge_delay",
           "hedging_status"]

log = logging.getLogger(__name__)
COLD_FRACTION = 0.05  # an endpoint with no TTFT history is hedged after this share of the first-token timeout
WAIT_SLACK = 30.0  # seconds past the job's budget after which a race is given up (a bug, not a state)
HedgeState = Literal["pending", "launching", "sent", "not_needed", "no_budget", "no_thread", "refused",
                     "admit_failed", "off"]


def cold_hedge_delay(settings: Settings) -> float:
    """The hedge delay of an endpoint with no TTFT history: AGENT_FIRST_TOKEN_TIMEOUT-based.

    A twentieth of the first-token timeout (3 s of the default 60 s), never below
    AGENT_HEDGE_MIN_DELAY nor above the timeout itself.
    """
    timeout = settings.agent_first_token_timeout
    return min(timeout, max(settings.agent_hedge_min_delay, timeout * COLD_FRACTION))


@dataclass(frozen=True)
class Hedging:
    """What a run needs to hedge: the process's hedge threads, and how long a call waits first."""

    pool: HedgePool
    min_delay: float  # AGENT_HEDGE_MIN_DELAY
    cold_delay: float  # cold_hedge_delay: the endpoint's p95 is not known yet
    ceiling: float  # AGENT_FIRST_TOKEN_TIMEOUT: a later hedge would never be sent

    @classmethod
    def from_settings(cls, settings: Settings, pool: HedgePool) -> Hedging:
        return cls(pool=pool, min_delay=settings.agent_hedge_min_delay, cold_delay=cold_hedge_delay(settings),
                   ceiling=settings.agent_first_token_timeout)

    def delay_for(self, ticket: Ticket) -> float:
        """Seconds the admitted call waits for a first token before it is hedged (`hedge_delay`)."""
        return hedge_delay(getattr(ticket, "hedge_after", None), min_delay=self.min_delay,
                           cold_delay=self.cold_delay, ceiling=self.ceiling)


def hedge_delay(p95: float | None, *, min_delay: float, cold_delay: float, ceiling: float) -> float:
    """The endpoint's p95 TTFT (admission's `hedge_after`, llmpool.ttft) within [min_delay, ceiling];
    `cold_delay` while the endpoint has too few samples for a p95."""
    if p95 is None:
        return cold_delay
    return min(ceiling, max(min_delay, float(p95)))


def hedging_status(settings: Settings, p95s: dict[str, float | None]) -> dict[str, object]:
    """Hedging for /status: whether it is on, its bounds, and each endpoint's hedge delay now."""
    cold, ceiling = cold_hedge_delay(settings), settings.agent_first_token_timeout
    return {"enabled": settings.agent_hedge_enabled, "min_delay": settings.agent_hedge_min_delay,
            "cold_delay": cold, "threads_per_worker": hedge_threads(settings.agent_worker_concurrency),
            "delays": {endpoint_id: hedge_delay(p95, min_delay=settings.agent_hedge_min_delay, cold_delay=cold,
                                                ceiling=ceiling) for endpoint_id, p95 in p95s.items()}}


class RaceOps(Protocol):
    """What a race asks of its run: admit, call and settle one endpoint (llmpool.runner._Run)."""

    def admit_call(self, endpoint: Endpoint) -> Ticket: ...

    def make_call(self, endpoint: Endpoint, *, on_token: Callable[[str], None], cancel: CallCancel) -> CallOutcome: ...

    def settle_call(self, endpoint: Endpoint, ticket: Ticket, *, outcome: Outcome, used: int | None,
                    started: float) -> None: ...

    def publish(self, text: str) -> None: ...


@dataclass(frozen=True)
class LegEnd:
    """How one call ended: an answer, or the error it raised (CallCancelled when we cut it)."""

    outcome: CallOutcome | None = None
    error: BaseException | None = None


@dataclass
class Leg:
    """One call of a hedged attempt."""

    role: Literal["primary", "hedge"]
    endpoint: Endpoint
    ticket: Ticket
    started: float = field(default_factory=time.monotonic)
    cancel: CallCancel = field(default_factory=CallCancel)
    published: bool = False  # this call's tokens reached the job's stream
    end: LegEnd | None = None


def _settle_outcome(end: LegEnd) -> tuple[Outcome, int | None]:
    if end.outcome is not None:
        return "success", end.outcome.completion.usage.get("total_tokens")
    if isinstance(end.error, EndpointStarting):
        return "neutral", 0  # loading is not failing (llmpool.runner): its tokens go back too
    if isinstance(end.error, RetryableError):
        return failure_outcome(end.error), None
    if isinstance(end.error, LocalShortage):
        return "neutral", 0  # the call never reached the endpoint: its tokens go back too
    return "neutral", None  # cancelled by us, the caller's error, or ours: the endpoint is not to blame


@dataclass
class Race:
    """What a hedged attempt came to: the winner (if any answered), every call made, the hedge's fate."""

    winner: Leg | None
    legs: list[Leg]
    hedge: HedgeState
    delay: float

    @property
    def answer(self) -> CallOutcome | None:
        return self.winner.end.outcome if self.winner and self.winner.end else None

    @property
    def hedge_sent(self) -> bool:
        """The hedge reached its endpoint, so it is one of the job's calls."""
        hedge = next((leg for leg in self.legs if leg.role == "hedge"), None)
        return hedge is not None and not (hedge.end is not None and isinstance(hedge.end.error, LocalShortage))

    def record(self) -> dict[str, object]:
        """The hedge as the job's history tells it."""
        hedge = next((leg for leg in self.legs if leg.role == "hedge"), None)
        entry: dict[str, object] = {"event": "hedge", "state": self.hedge, "delay": round(self.delay, 3),
                                    "from": self.legs[0].endpoint.id}
        if hedge is not None:
            entry["endpoint"] = hedge.endpoint.id
            entry["won"] = self.winner is hedge
        return entry


class HedgedAttempt:
    """One admitted call to `primary`, hedged to `backup` after `delay` seconds without a token."""

    def __init__(self, ops: RaceOps, primary: Endpoint, backup: Endpoint, *, pool: HedgePool, delay: float,
                 may_hedge: Callable[[], bool], budget: float) -> None:
        self.ops = ops
        self.primary_endpoint = primary
        self.backup = backup
        self.pool = pool
        self.delay = delay
        self.may_hedge = may_hedge  # the job still has a call left for the hedge
        self.budget = budget
        self._cond = threading.Condition()
        self._legs: list[Leg] = []
        self._winner: Leg | None = None
        self._hedge: HedgeState = "pending"
        self._timer: Timer | None = None

    def run(self, ticket: Ticket) -> Race:
        """Make the primary call in this thread, hedged if it waits too long; back when the race is decided."""
        primary = Leg("primary", self.primary_endpoint, ticket)
        self._legs.append(primary)
        self._timer = self.pool.call_later(self.delay, self._launch)
        try:
            self._run_leg(primary)
            self._await(primary)
        except BaseException:
            self._give_up()
            raise
        with self._cond:
            return Race(self._winner, list(self._legs), self._hedge, self.delay)

    # --- the calls -------------------------------------------------------------------------------

    def _run_leg(self, leg: Leg) -> None:
        try:
            end = LegEnd(outcome=self.ops.make_call(leg.endpoint, on_token=lambda text: self._token(leg, text),
                                                    cancel=leg.cancel))
        except BaseException as exc:  # kept, and raised again by the job's own thread if it decides the job
            end = LegEnd(error=CallCancelled("cancelled", endpoint=leg.endpoint.id) if leg.cancel.cancelled
                         and not isinstance(exc, CallCancelled) else exc)
        outcome, used = _settle_outcome(end)
        try:
            self.ops.settle_call(leg.endpoint, leg.ticket, outcome=outcome, used=used, started=leg.started)
        except Exception as exc:  # Redis away: the lease lapses on its own; the job goes on
            log.warning("could not settle the call to %s: %s", leg.endpoint.id, exc)
        self._ended(leg, end)

    def _token(self, leg: Leg, text: str) -> None:
        with self._cond:
            if self._winner is None:
                self._win(leg)
            if self._winner is not leg:
                return  # the loser's last bytes, read before its cancel landed
            leg.published = True
        self.ops.publish(text)

    def _win(self, leg: Leg) -> None:
        """`leg` answered first: every other call is cancelled and no hedge is sent any more."""
        self._winner = leg
        for other in self._legs:
            if other is not leg and other.end is None:
                other.cancel.cancel()
        self._stop_hedge()

    def _stop_hedge(self) -> None:
        if self._hedge == "pending":
            self._hedge = "not_needed"
            if self._timer is not None:
                self._timer.cancel()

    def _ended(self, leg: Leg, end: LegEnd) -> None:
        with self._cond:
            leg.end = end
            if end.error is not None and not isinstance(end.error, LLMPoolError):
                self._give_up_locked()  # a bug (or Redis gone) in one call: nothing of this race goes on
            elif self._winner is None and end.outcome is not None:
                self._win(leg)  # an answer without text (tool calls only) wins when it ends
            elif self._winner is None and leg.role == "primary":
                self._stop_hedge()  # failed before a token: the job fails over to the next candidate now
                if isinstance(end.error, EndpointTimeout):
                    self._cancel_silent_hedge()
            self._cond.notify_all()

    def _cancel_silent_hedge(self) -> None:
        """The primary's first-token wait ran out: a hedge that is silent past its own endpoint's usual
        TTFT (its p95, or any wait while that is unknown) ends with it, so a job whose two endpoints both
        stall times out once, not twice in a row. A hedge still within its endpoint's usual TTFT goes on,
        as the job's next call, bounded by its own first-token timeout."""
        for leg in self._legs:
            if leg.role != "hedge" or leg.end is not None or leg.published:
                continue
            usual = getattr(leg.ticket, "hedge_after", None)
            if usual is None or time.monotonic() - leg.started >= usual:
                leg.cancel.cancel()

    # --- the hedge -------------------------------------------------------------------------------

    def _launch(self) -> None:
        """On the timer thread, at the hedge delay: hand the hedge to a hedge thread if it may go."""
        with self._cond:
            if self._hedge != "pending":
                return
            if not self.may_hedge():
                self._hedge = "no_budget"
            elif self.pool.submit(self._run_hedge) is None:
                self._hedge = "no_thread"
            else:
                self._hedge = "launching"
            self._cond.notify_all()

    def _run_hedge(self) -> None:
        try:
            ticket = self.ops.admit_call(self.backup)
        except Exception as exc:
            log.warning("could not admit a hedge to %s: %s", self.backup.id, exc)
            self._set_hedge("admit_failed")
            return
        if not ticket.allowed:
            self._set_hedge("refused")
            return
        with self._cond:
            late = self._winner is not None or self._hedge != "launching"
            if not late:
                leg = Leg("hedge", self.backup, ticket)
                self._legs.append(leg)
                self._hedge = "sent"
        if late:  # the first call answered while admission ran: give the slot straight back
            self._set_hedge("not_needed")
            try:
                self.ops.settle_call(self.backup, ticket, outcome="neutral", used=0, started=time.monotonic())
            except Exception as exc:
                log.warning("could not settle an unsent hedge to %s: %s", self.backup.id, exc)
            return
        self._run_leg(leg)

    def _set_hedge(self, state: HedgeState) -> None:
        with self._cond:
            if self._hedge == "launching":
                self._hedge = state
            self._cond.notify_all()

    # --- waiting for the outcome -----------------------------------------------------------------

    def _decided(self, primary: Leg) -> bool:
        if self._winner is not None:
            return self._winner.end is not None
        if primary.end is None or self._hedge == "launching":
            return False
        return all(leg.end is not None for leg in self._legs)

    def _await(self, primary: Leg) -> None:
        give_up_at = time.monotonic() + max(0.0, self.budget) + WAIT_SLACK
        with self._cond:
            while not self._decided(primary):
                left = give_up_at - time.monotonic()
                if left <= 0:
                    log.error("a hedged call to %s did not end within its budget: cancelled", self.backup.id)
                    self._give_up_locked()
                    return
                self._cond.wait(min(left, 1.0))

    def _give_up(self) -> None:
        with self._cond:
            self._give_up_locked()

    def _give_up_locked(self) -> None:
        self._stop_hedge()
        if self._hedge == "launching":
            self._hedge = "not_needed"
        for leg in self._legs:
            if leg.end is None:
                leg.cancel.cancel()
