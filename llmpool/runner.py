"""Running one chat job: admit, call and settle candidates in order until one answers.

Plain logic with no Celery in it: the task decodes, claims and finishes; this decides. Before
each call the gate admits (breaker permission, concurrency lease, rate tokens: one round trip);
after it the gate settles. A retryable failure charges the endpoint and moves to the next
candidate at once, within the call budget and the deadline; a caller's error ends the job and
charges nothing; when every candidate refused, the job is told when to come back (Refused).
A shortage of our own (no free connection in this process's pool) charges nothing either, costs
the job no call, and ends the run at once as a refusal: the job waits and runs again.
With `hedging`, a call still without a token after its endpoint's hedge delay may be raced by the
same request to the next candidate (llmpool.hedging); the first to stream wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from llmpool.breaker import failure_outcome
from llmpool.endpoints import Endpoint
from llmpool.errors import (
    AllEndpointsFailed,
    CallCancelled,
    EndpointStarting,
    IncompleteAnswer,
    JobCancelled,
    JobExpired,
    LLMPoolError,
    LocalShortage,
    NoLLMAvailable,
    RateLimited,
    Refused,
    RetryableError,
)
from llmpool.hedging import HedgedAttempt, Hedging, Race
from llmpool.http_deadline import CallCancel
from llmpool.jobs import EventPublisher
from llmpool.llm_client import CallOutcome, LLMClient
from llmpool.logs import set_job_field
from llmpool.schemas import ChatJob, ChatResult, Timings, Usage
from llmpool.usage import prompt_estimate

__all__ = ["run_chat", "DEFAULT_MAX_TOKENS", "RunReport", "wait_delay", "Gate", "OpenGate", "Ticket", "Outcome",
           "estimate_tokens"]

log = logging.getLogger(__name__)

WAIT_FIRST = 0.5  # the first wait for an LLM; it doubles up to WAIT_MAX
WAIT_MAX = 5.0
DEFAULT_PAUSE = 1.0  # a 429 without Retry-After still pauses the endpoint this long
SHORTAGE_WAIT = 1.0  # a job that met a shortage of ours runs again after this (plus the park's jitter)
# A cut answer (llama-cpp-python interrupts a stream for a newer request) says "busy", not "broken":
# with no other candidate left the job comes back after this, while it has calls left.
INCOMPLETE_WAIT = 1.0
# A server loading its model (or a container starting) is paused this long for every worker unless
# it says how long (Retry-After): long enough not to hammer it, short enough to use it soon after.
STARTING_PAUSE = 2.0
Outcome = Literal["success", "failure", "down", "neutral"]  # down: connection refused (settle.lua)
DEFAULT_MAX_TOKENS = 2048  # a job without max_tokens reserves this many output tokens


class Ticket(Protocol):
    """What admission answered (llmpool.admission.Admission has this shape)."""

    @property
    def allowed(self) -> bool: ...

    @property
    def trial(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def retry_after(self) -> float: ...


class Gate(Protocol):
    """Admission to one endpoint for one call, and its settlement."""

    def admit(self, endpoint: Endpoint, job_id: str, *, tokens: int, budget: float,
              fallback: bool = False) -> Ticket: ...

    def settle(self, endpoint: Endpoint, job_id: str, ticket: Ticket, *, outcome: Outcome, reserved: int,
               used: int | None, duration: float) -> None: ...

    def pause(self, endpoint: Endpoint, seconds: float) -> None: ...

    def first_token(self, endpoint: Endpoint, job_id: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class _Open:
    allowed: bool = True
    trial: bool = False
    reason: str = "ok"
    retry_after: float = 0.0


class OpenGate:
    """Admits everything and records nothing: for tests of the call logic alone."""

    def admit(self, endpoint: Endpoint, job_id: str, *, tokens: int, budget: float,
              fallback: bool = False) -> Ticket:
        return _Open()

    def settle(self, endpoint: Endpoint, job_id: str, ticket: Ticket, *, outcome: Outcome, reserved: int,
               used: int | None, duration: float) -> None:
        return None

    def pause(self, endpoint: Endpoint, seconds: float) -> None:
        return None

    def first_token(self, endpoint: Endpoint, job_id: str, seconds: float) -> None:
        return None


@dataclass
class RunReport:
    """What the attempts of one job did, for the job record and the logs."""

    calls: int = 0
    failures: list[dict[str, object]] = field(default_factory=list)
    refusals: list[dict[str, object]] = field(default_factory=list)
    hedges: list[dict[str, object]] = field(default_factory=list)  # llmpool.hedging.Race.record()
    failovers: list[str] = field(default_factory=list)  # endpoints that failed a call the job then moved on from


def wait_delay(waits_so_far: int, jitter: float) -> float:
    """Seconds a job waits before looking for an LLM again: exponential, capped, jittered.

    `jitter` in [0, 1) spreads jobs that started waiting together, so they do not return at once.
    """
    base = min(WAIT_FIRST * 2 ** min(waits_so_far, 10), WAIT_MAX)
    return base * (0.75 + 0.5 * jitter)


def estimate_tokens(job: ChatJob, max_tokens: int) -> int:
    """Tokens to reserve before the call: ~4 characters a token for the prompt, plus max_tokens."""
    return prompt_estimate(job) + max_tokens


def _result(outcome: CallOutcome, endpoint: Endpoint, calls: int) -> ChatResult:
    done = outcome.completion  # its usage is truthful already (llmpool.usage, in the client)
    usage = Usage(**done.usage, estimated=done.usage_estimated)
    tpot = None
    if outcome.ttft is not None and usage.completion_tokens > 1:
        tpot = (outcome.total - outcome.ttft) / (usage.completion_tokens - 1)
    return ChatResult(
        content=done.content, tool_calls=done.tool_calls, model=done.model or endpoint.model,
        endpoint=endpoint.id, finish_reason=done.finish_reason, usage=usage,
        timings=Timings(ttft=outcome.ttft, total=outcome.total, tpot=tpot), attempts=calls,
    )


class _RunOut(Exception):
    """A shortage of our own: every other candidate would meet it too, so the run stops here."""


@dataclass
class _Run:
    job: ChatJob
    job_id: str
    client: LLMClient
    gate: Gate
    publisher: EventPublisher
    deadline: float
    clock: Callable[[], float]
    reserved: int
    report: RunReport = field(default_factory=RunReport)
    candidates: list[Endpoint] = field(default_factory=list)
    max_calls: int = 1
    _tickets: dict[str, Ticket] = field(default_factory=dict)  # endpoint id -> its call's admission

    def call_options(self, endpoint: Endpoint) -> dict[str, Any]:
        """The first-token bound and sink of a call to `endpoint` (llmpool.ttft).

        The endpoint's adaptive first-token timeout holds only while the job has somewhere to fail
        over to (a later candidate and a call left): with nowhere to go, waiting up to
        AGENT_FIRST_TOKEN_TIMEOUT beats failing the job early.
        """
        later = endpoint in self.candidates and self.candidates[-1] is not endpoint
        ticket = self._tickets.get(endpoint.id)
        wait = getattr(ticket, "first_token_timeout", None) if later and self.report.calls < self.max_calls else None
        return {"first_token_timeout": wait,
                "on_first_token": lambda seconds: self.gate.first_token(endpoint, self.job_id, seconds)}

    def check_cancelled(self) -> None:
        """A cancelled job makes no further call."""
        if self.publisher.cancelled:
            raise JobCancelled("the job was cancelled", calls=self.report.calls)

    def attempt(self, endpoint: Endpoint) -> ChatResult | None:
        """One candidate: None when it refused or failed retryably (the caller moves on)."""
        self.check_cancelled()
        budget = self.deadline - self.clock()
        if budget <= 0:
            raise JobExpired("the job's deadline passed before an endpoint answered", failures=self.report.failures)
        set_job_field("endpoint", endpoint.id)  # every line from here on names the endpoint called
        ticket = self.admit_call(endpoint)
        if not ticket.allowed:
            self.report.refusals.append({"endpoint": endpoint.id, "reason": ticket.reason,
                                         "retry_after": ticket.retry_after})
            return None
        self.report.calls += 1
        started = time.monotonic()
        settle = self._settler(endpoint, ticket, started)
        cancel = CallCancel()  # the job's cancel (llmpool.leases) ends the call through it
        self.publisher.watch(cancel)
        try:
            outcome = self.client.chat(endpoint, self.job, budget=budget, on_token=self.publisher.token,
                                       cancel=cancel, **self.call_options(endpoint))
        except EndpointStarting as exc:
            settle("neutral", 0)  # loading is not failing: no breaker charge, its tokens go back
            self._starting(endpoint, exc)
            return None
        except RetryableError as exc:
            settle(failure_outcome(exc), None)
            self._failed(endpoint, exc)
            return None
        except LocalShortage as exc:
            settle("neutral", 0)  # the call never reached the endpoint: its tokens go back too
            self._short(endpoint, exc)
            raise _RunOut() from exc
        except BaseException:
            settle("neutral", None)  # the caller's error, or ours (a cancelled job): the endpoint is not to blame
            raise
        finally:
            self.publisher.unwatch(cancel)
        settle("success", outcome.completion.usage.get("total_tokens"))
        return _result(outcome, endpoint, self.report.calls)

    def _settler(self, endpoint: Endpoint, ticket: Ticket, started: float) -> Callable[[Outcome, int | None], None]:
        def settle(outcome: Outcome, used: int | None) -> None:
            self.gate.settle(endpoint, self.job_id, ticket, outcome=outcome, reserved=self.reserved, used=used,
                             duration=time.monotonic() - started)
        return settle

    def _short(self, endpoint: Endpoint, exc: LocalShortage) -> None:
        log.warning("job %s: %s; it runs again in %.0fs, nothing charged to %s", self.job_id, exc.message,
                     SHORTAGE_WAIT, endpoint.id)
        self.report.calls -= 1  # a call that never left this process is not one of the job's calls
        self.report.refusals.append({"endpoint": endpoint.id, "reason": exc.code, "retry_after": SHORTAGE_WAIT})
        self.publisher.reset()

    def _starting(self, endpoint: Endpoint, exc: EndpointStarting) -> None:
        """The endpoint is loading: paused fleet-wide, the call not one of the job's, the job moves on
        (or waits: a refusal). Nothing is marked unhealthy; the health pass marks it starting."""
        wait = float(exc.details.get("retry_after") or STARTING_PAUSE)
        log.info("job %s: %s; it is paused %.1fs, nothing charged", self.job_id, exc.message, wait)
        self.gate.pause(endpoint, wait)
        self.report.calls -= 1
        self.report.refusals.append({"endpoint": endpoint.id, "reason": exc.code, "retry_after": wait})

    def _failed(self, endpoint: Endpoint, exc: RetryableError, *, reset: bool = True) -> None:
        log.warning("endpoint %s failed for job %s: %s", endpoint.id, self.job_id, exc.message)
        if isinstance(exc, RateLimited):
            self.gate.pause(endpoint, float(exc.details.get("retry_after") or DEFAULT_PAUSE))
        self.report.failures.append({"endpoint": endpoint.id, **exc.to_dict()})
        if isinstance(exc, IncompleteAnswer):  # the same endpoint may answer in full once it can take it
            self.report.refusals.append({"endpoint": endpoint.id, "reason": exc.code, "retry_after": INCOMPLETE_WAIT})
        if reset:  # a hedge's loser never published, and its winner may be streaming right now
            self.publisher.reset()

    # --- hedged calls (llmpool.hedging); the methods below are the race's RaceOps ---

    def attempt_hedged(self, endpoint: Endpoint, backup: Endpoint, hedging: Hedging,
                       max_calls: int) -> tuple[ChatResult | None, bool]:
        """`attempt`, raced by a hedge to `backup` if it waits too long; True when the hedge used `backup` up."""
        self.check_cancelled()
        if self._budget() <= 0:
            raise JobExpired("the job's deadline passed before an endpoint answered", failures=self.report.failures)
        ticket = self.admit_call(endpoint)
        if not ticket.allowed:
            self.report.refusals.append({"endpoint": endpoint.id, "reason": ticket.reason,
                                         "retry_after": ticket.retry_after})
            return None, False
        self.report.calls += 1
        # A trial decides the endpoint for the whole fleet: cancelled by a hedge it would decide
        # nothing, and a suspect endpoint that is only slower than its old p95 would stay suspect
        # until its history aged out. So its hedge is due only after the job's budget: never.
        delay = self._budget() + 1 if ticket.trial else hedging.delay_for(ticket)
        race = HedgedAttempt(self, endpoint, backup, pool=hedging.pool, delay=delay,
                             may_hedge=lambda: self.report.calls < max_calls and self._budget() > 0,
                             budget=self._budget()).run(ticket)
        if race.hedge_sent:
            self.report.calls += 1
        if race.hedge != "not_needed":
            self.report.hedges.append(race.record())
        return self._race_result(endpoint, race), race.hedge_sent

    def _race_result(self, endpoint: Endpoint, race: Race) -> ChatResult | None:
        """The race's answer, or None to move on; raises what must end the job (or the run)."""
        errors = [(leg, leg.end.error) for leg in race.legs if leg.end is not None and leg.end.error is not None]
        crash = next((error for _, error in errors if not isinstance(error, LLMPoolError)), None)
        if crash is not None:
            raise crash
        for leg, error in errors:
            if isinstance(error, EndpointStarting):
                self._starting(leg.endpoint, error)
            elif isinstance(error, RetryableError):
                self._failed(leg.endpoint, error, reset=leg.published)
        if race.answer is not None and race.winner is not None:
            return _result(race.answer, race.winner.endpoint, self.report.calls)
        ours = (LocalShortage, CallCancelled, RetryableError)
        caller_error = next((error for _, error in errors if not isinstance(error, ours)), None)
        if caller_error is not None:
            raise caller_error
        first = race.legs[0].end
        if first is not None and isinstance(first.error, LocalShortage):
            self._short(endpoint, first.error)
            raise _RunOut() from first.error
        return None

    def _budget(self) -> float:
        return self.deadline - self.clock()

    def admit_call(self, endpoint: Endpoint) -> Ticket:
        set_job_field("endpoint", endpoint.id)  # a hedge leg sets it in its own thread's copy of the context
        # fallback: the job has a later candidate, so an overdue endpoint (admit.lua) may send it there
        ticket = self.gate.admit(endpoint, self.job_id, tokens=self.reserved, budget=self._budget(),
                                 fallback=endpoint in self.candidates and self.candidates[-1] is not endpoint)
        self._tickets[endpoint.id] = ticket
        return ticket

    def make_call(self, endpoint: Endpoint, *, on_token: Callable[[str], None], cancel: CallCancel) -> CallOutcome:
        self.publisher.watch(cancel)  # a cancel of the job ends both legs of a race
        try:
            return self.client.chat(endpoint, self.job, budget=self._budget(), on_token=on_token, cancel=cancel,
                                    **self.call_options(endpoint))
        finally:
            self.publisher.unwatch(cancel)

    def settle_call(self, endpoint: Endpoint, ticket: Ticket, *, outcome: Outcome, used: int | None,
                    started: float) -> None:
        self.gate.settle(endpoint, self.job_id, ticket, outcome=outcome, reserved=self.reserved, used=used,
                         duration=time.monotonic() - started)

    def publish(self, text: str) -> None:
        self.publisher.token(text)


def run_chat(
    job: ChatJob, *, job_id: str, candidates: list[Endpoint], client: LLMClient, publisher: EventPublisher,
    deadline: float, max_calls: int, gate: Gate | None = None, max_tokens: int = DEFAULT_MAX_TOKENS,
    clock: Callable[[], float] = time.time, report: RunReport | None = None, hedging: Hedging | None = None,
) -> tuple[ChatResult, RunReport]:
    """Answer `job` from the first candidate that admits it and succeeds; `deadline` is unix time.

    `report`, when given, is filled in as the run goes, so the caller has it even when this raises.
    `hedging`, when given, lets a call that waits too long be raced by the next candidate.
    """
    if not candidates:
        raise NoLLMAvailable("No LLM available: no endpoint is configured or selected")
    run = _Run(job=job, job_id=job_id, client=client, gate=gate or OpenGate(), publisher=publisher,
               deadline=deadline, clock=clock, reserved=estimate_tokens(job, job.max_tokens or max_tokens),
               report=report if report is not None else RunReport(), candidates=candidates, max_calls=max_calls)
    failed_from: str | None = None  # the endpoint whose failure the next attempt moves away from
    index = 0
    while index < len(candidates) and run.report.calls < max_calls:
        endpoint = candidates[index]
        if failed_from is not None:
            run.report.failovers.append(failed_from)
            log.info("failover: job %s moves from %s to %s", job_id, failed_from, endpoint.id)
        failures = len(run.report.failures)
        backup = candidates[index + 1] if index + 1 < len(candidates) else None
        try:
            if hedging is not None and backup is not None:
                result, backup_used = run.attempt_hedged(endpoint, backup, hedging, max_calls)
            else:
                result, backup_used = run.attempt(endpoint), False
        except _RunOut:
            break
        except CallCancelled:
            run.check_cancelled()  # cut because the job was cancelled: say so
            raise
        if result is not None:
            return result, run.report
        failed_from = endpoint.id if len(run.report.failures) > failures else None
        index += 2 if backup_used else 1  # a hedge that was sent was the backup's call
    run.check_cancelled()
    report = run.report
    if report.refusals and report.calls < max_calls:
        retry_after = min(float(r["retry_after"]) for r in report.refusals)  # type: ignore[arg-type]
        raise Refused("every endpoint refused the job for now", retry_after=retry_after,
                      refusals=report.refusals, failures=report.failures)
    summary = "; ".join(f"{f['endpoint']}: {f['message']}" for f in report.failures)
    raise AllEndpointsFailed(f"All LLM endpoints failed: {summary}", failures=report.failures)
