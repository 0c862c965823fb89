"""The `llmpool.chat` task: decode, claim, run on the best endpoint, settle. Logic lives in llmpool.

The claim is the one gate: a delivery runs the job only when it claims it. A delivery of a
finished job answers with its real outcome; one of a job running elsewhere is acked (the running
set brings the job back if that worker dies). A job that must wait is parked in Redis and the
delivery ends: no thread, no unacked message and no worker memory hold a waiting job.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore

from llmpool.deadlines import default_deadline
from llmpool.endpoints import Endpoint
from llmpool.errors import (
    AllEndpointsFailed,
    InvalidJob,
    JobCancelled,
    JobExpired,
    LLMPoolError,
    ModelNotFound,
    NoLLMAvailable,
    Refused,
    TooManyAttempts,
    error_from_dict,
)
from llmpool.gate import RedisGate
from llmpool.jobs import AdmitWith, Claim, EventPublisher, RunEnd
from llmpool.logs import set_job_field
from llmpool.metrics import RunFacts
from llmpool.resources import Resources, current
from llmpool.run_gate import RunGate
from llmpool.runner import DEFAULT_MAX_TOKENS, Gate, RunReport, estimate_tokens, run_chat, wait_delay
from llmpool.schemas import CHAT_QUEUES, ChatJob, Message, parse_job, queue_for
from llmpool.tool_job import run_job_tool_loop, tool_loop_endpoints
from llmpool.tools import builtin_tools
from workers.signals import sweeper

__all__ = ["chat"]

log = logging.getLogger(__name__)
ADMISSION_JITTER = 0.25  # seconds: refused jobs that wait together come back spread out


class ChatTask(Task):
    Request = "workers.request:ChatRequest"
    # Our own errors are outcomes, not crashes: logged at INFO without a traceback.
    throws = (LLMPoolError,)
    # The job record is the one stored copy of the answer; Celery's result backend keeps none.
    ignore_result = True
    # Celery's repr of the return value goes only where it is hidden (the success log line, the
    # task-succeeded event: workers.request); a whole answer's repr cost ~0.1 ms of CPU per job.
    resultrepr_maxsize = 1


class Parked(Exception):
    """The job waits in Redis until `due` (unix time); this delivery is done with it."""

    def __init__(self, due: float) -> None:
        super().__init__(due)
        self.due = due


def _deadline(job: ChatJob, claim: Claim, res: Resources) -> float:
    if job.deadline is not None:
        return job.deadline
    if claim.deadline:
        return claim.deadline
    return (claim.created_at or time.time()) + default_deadline(job.priority, res.settings)


def _messages_with_memory(job: ChatJob, res: Resources) -> ChatJob:
    if not (job.remember and job.thread_id):
        return job
    history = [Message.model_validate(m) for m in res.conversations.history(job.thread_id, job.owner)]
    return job.model_copy(update={"messages": [*history, *job.messages]}) if history else job


def _remember(job: ChatJob, content: str, res: Resources) -> None:
    if job.remember and job.thread_id:
        turn = [m.model_dump(exclude_none=True) for m in job.messages if m.role == "user"][-1:]
        res.conversations.append(job.thread_id, [*turn, {"role": "assistant", "content": content}], job.owner)


def _history(report: RunReport) -> list[dict[str, Any]]:
    now = time.time()
    failed = [{"event": "call_failed", "at": now, "endpoint": f.get("endpoint"), "error": f.get("type"),
               "message": f.get("message")} for f in report.failures]
    refused = [{"event": "refused", "at": now, "endpoint": r.get("endpoint"), "reason": r.get("reason")}
               for r in report.refusals]
    hedged = [{"at": now, **h} for h in report.hedges]
    return failed + refused + hedged


def _delivered_queue(task: ChatTask) -> str:
    """The chat queue a message came from, for a job too broken to say its priority (bounded)."""
    queue = str((task.request.delivery_info or {}).get("routing_key"))
    return queue if queue in CHAT_QUEUES.values() else "unknown"


def _outcome_of_finished(res: Resources, job_id: str, state: str) -> dict[str, Any]:
    """A duplicate delivery of a finished job ends as that job did: its failure stays a failure."""
    log.info("job %s already %s: duplicate delivery answered from its record", job_id, state)
    record = res.jobs.get(job_id) or {}
    if state == "succeeded":
        return dict(record.get("result") or {})
    raise error_from_dict(record.get("error") or {"type": state, "message": f"job {state}"})


@shared_task(name="llmpool.chat", bind=True, base=ChatTask)
def chat(self: ChatTask, job: Any) -> dict[str, Any]:
    """Answer one chat job; the return value is the ChatResult as JSON."""
    res = current()
    job_id = self.request.id
    try:
        parsed = parse_job(job)
    except InvalidJob as exc:
        if res.jobs.finish(job_id, "failed", exc.to_dict()):
            res.metrics.run_ended(RunFacts(queue=_delivered_queue(self), ended="failed", error=exc.code))
        raise
    plan = _plan(res, parsed)
    first = _first_admission(res, job_id, parsed, plan)
    claim = res.jobs.claim(job_id, worker=self.request.hostname or "?", lease=res.settings.agent_job_lease,
                           max_attempts=res.settings.agent_job_max_attempts, admit=first[1] if first else None)
    if claim.verdict == "done":
        return _outcome_of_finished(res, job_id, claim.state)
    if claim.verdict == "busy":
        log.info("job %s is running elsewhere: this copy is acked; the sweep recovers it if that run dies", job_id)
        raise Ignore()
    if claim.verdict == "exhausted":
        too_many = TooManyAttempts(f"job was run {claim.attempts} times and its worker died each time")
        if res.jobs.finish(job_id, "failed", too_many.to_dict()):
            res.metrics.run_ended(RunFacts(queue=queue_for(parsed.priority), ended="failed", error=too_many.code))
        raise too_many
    set_job_field("attempt", claim.claim)  # the run number, on every line logged from here on
    publisher = res.jobs.publisher(job_id, stream_tokens=parsed.stream, claim=claim.claim)
    res.leases.hold(job_id, publisher)
    gate = _run_gate(res, job_id, parsed, claim, first)
    try:
        return _run(res, job_id, parsed, claim, publisher, plan, gate)
    except Parked as parked:
        sweeper(self.app).nudge(parked.due)
        raise Ignore() from None
    finally:
        if gate is not None:
            gate.close()
        res.leases.drop(job_id)


def _plan(res: Resources, job: ChatJob) -> list[Endpoint] | None:
    """The job's candidates from this process's cached selection, before the claim; None when there
    is none to go by (the run looks again and says why), or it could not be had."""
    try:
        selection = res.selection_cache.get()
        return res.candidates(selection, job) if selection is not None and selection.order else None
    except Exception as exc:  # e.g. Redis away: the run meets it again and ends the job properly
        log.debug("job candidates not planned before the claim: %s", exc)
        return None


def _first_admission(res: Resources, job_id: str, job: ChatJob,
                     plan: list[Endpoint] | None) -> tuple[Endpoint, AdmitWith] | None:
    """The first candidate's admission, to take in the claim's round trip (first runs only: the
    script skips it on later ones); none for a tool loop, which picks its own endpoints."""
    if not plan or not isinstance(res.gate, RedisGate) or isinstance(job.tools, str):
        return None
    tokens = estimate_tokens(job, job.max_tokens or DEFAULT_MAX_TOKENS)
    admit = res.gate.first_admission(plan[0], job_id, tokens=tokens, deadline=job.deadline,
                                     default_span=default_deadline(job.priority, res.settings),
                                     fallback=len(plan) > 1)  # another candidate: an overdue first one may refuse
    return (plan[0], admit) if admit is not None else None


def _run_gate(res: Resources, job_id: str, job: ChatJob, claim: Claim,
              first: tuple[Endpoint, AdmitWith] | None) -> RunGate | None:
    """The run's own gate (llmpool.run_gate), holding what the claim admitted."""
    if not isinstance(res.gate, RedisGate):
        return None
    taken = None
    if first is not None and claim.admitted:
        taken = (first[0], res.gate.admitted(first[0], job_id, claim.admitted))
    return RunGate(res.gate, job_id, first=taken,
                   reserved=estimate_tokens(job, job.max_tokens or DEFAULT_MAX_TOKENS))


def _park(res: Resources, job_id: str, claim: Claim, report: RunReport, *, delay: float, reason: str) -> Parked:
    entry = {"event": "parked", "at": time.time(), "reason": reason, "delay": round(delay, 3)}
    if not res.jobs.park(job_id, claim=claim.claim, delay=delay, calls=report.calls,
                         history=[*_history(report), entry]):
        log.warning("job %s: lease lost before it could be parked", job_id)
    log.info("job %s waits %.2fs in Redis: %s", job_id, delay, reason)
    return Parked(time.time() + delay)


def _wait_or_fail(res: Resources, job_id: str, claim: Claim, report: RunReport, deadline: float,
                  exc: NoLLMAvailable | Refused) -> Parked:
    """No LLM selected, or every endpoint refused: park until it may pass, or fail at the deadline."""
    if isinstance(exc, Refused):
        delay = exc.retry_after + random.uniform(0, ADMISSION_JITTER)
        reasons = sorted({str(r["reason"]) for r in exc.details.get("refusals", [])})
        why = "refused: " + ", ".join(reasons)
        late: LLMPoolError = JobExpired("the job's deadline passed while every endpoint refused it",
                                        refusals=exc.details.get("refusals"))
    else:
        delay = wait_delay(max(0, claim.claim - 1), random.random())
        why = "no LLM selected"
        late = NoLLMAvailable("No LLM available before the job's deadline")
        res.selection_cache.invalidate()
    if time.time() + delay >= deadline:
        raise late
    return _park(res, job_id, claim, report, delay=delay, reason=why)


def _late(claim: Claim, *, no_llm: bool) -> LLMPoolError:
    """Why a job taken past its deadline failed: what it was waiting for, if it waited."""
    if claim.claim == 1:
        return JobExpired("the job's deadline passed before a worker took it")
    if no_llm:  # it came back from a wait for an LLM, a moment too late
        return NoLLMAvailable("No LLM available before the job's deadline")
    return JobExpired("the job's deadline passed while it waited to run again")


def _out_of_calls(claim: Claim) -> AllEndpointsFailed:
    return AllEndpointsFailed(f"the job used all {claim.calls} of its LLM calls in earlier runs")


def _call(res: Resources, job_id: str, job: ChatJob, claim: Claim, publisher: EventPublisher,
          report: RunReport, deadline: float, plan: list[Endpoint] | None, gate: Gate | None) -> dict[str, Any]:
    selection = res.selection_cache.get()
    if time.time() >= deadline:
        raise _late(claim, no_llm=selection is None or not selection.order)
    calls_left = res.settings.agent_job_max_calls - claim.calls
    if calls_left <= 0 and not isinstance(job.tools, str):  # a tool loop's rounds are not failures (tool_job)
        raise _out_of_calls(claim)
    if selection is None or not selection.order:
        raise NoLLMAvailable("No LLM selected yet")
    candidates = plan if plan is not None else res.candidates(selection, job)
    if not candidates and job.model:
        if res.model_vanished(job):  # accepted at submit, gone since: waiting would not bring it back
            raise ModelNotFound(f"The model '{job.model}' is served by no endpoint any more", param="model")
        raise NoLLMAvailable(f"No endpoint serving '{job.model}' is up yet")
    tools = builtin_tools(res.settings) if isinstance(job.tools, str) else {}  # made once per settings
    loop_on = tool_loop_endpoints(res, job, candidates, tools)
    if loop_on:
        result = run_job_tool_loop(res, job_id, _messages_with_memory(job, res), claim, publisher, report,
                                   deadline=deadline, candidates=loop_on, tools=tools)
    else:
        if calls_left <= 0:
            raise _out_of_calls(claim)
        plain = job.model_copy(update={"tools": None, "tool_choice": None}) if isinstance(job.tools, str) else job
        result, _ = run_chat(
            _messages_with_memory(plain, res), job_id=job_id, candidates=candidates,
            client=res.llm, publisher=publisher, deadline=deadline, gate=gate or res.gate, max_calls=calls_left,
            report=report, hedging=res.hedging,
        )
    if claim.started_at and claim.created_at:
        result.timings.queued = max(0.0, claim.started_at - claim.created_at)
    return result.model_dump(mode="json")


def _facts(job: ChatJob, claim: Claim, report: RunReport, *, ended: str | None, error: str = "",
           result: dict[str, Any] | None = None) -> RunFacts:
    now = time.time()
    created = claim.created_at
    first_wait = (claim.started_at - created) if claim.claim == 1 and claim.started_at and created else None
    return RunFacts(
        queue=queue_for(job.priority), ended=ended, error=error, result=result, failures=report.failures,
        refusals=report.refusals, failovers=report.failovers, hedges=report.hedges, queue_wait=first_wait,
        latency=(now - created) if ended and created else None)


def _measure(res: Resources, job: ChatJob, claim: Claim, report: RunReport, *, ended: str | None,
             error: str = "", result: dict[str, Any] | None = None) -> None:
    """Count this run in the fleet's metrics (one write); `ended` is the final state it wrote, if any."""
    res.metrics.run_ended(_facts(job, claim, report, ended=ended, error=error, result=result))


def _end(res: Resources, publisher: EventPublisher, gate: RunGate | None, job: ChatJob, claim: Claim,
         report: RunReport, state: str, payload: dict[str, Any], *, error: str = "",
         result: dict[str, Any] | None = None) -> bool:
    """End the job, and in the same round trip settle the run's last call and count the run
    (the job itself counts only if this run ended it); False if it had ended already."""
    after, if_ended = res.metrics.commands(_facts(job, claim, report, ended=state, error=error, result=result))
    held = gate.take() if gate is not None else None
    along = RunEnd(before=[held] if held is not None else [], after=after, if_ended=if_ended)
    return publisher.end(state, payload, calls=report.calls, history=_history(report), along=along)


def _run(res: Resources, job_id: str, job: ChatJob, claim: Claim, publisher: EventPublisher,
         plan: list[Endpoint] | None = None, gate: RunGate | None = None) -> dict[str, Any]:
    report = RunReport()
    deadline = _deadline(job, claim, res)
    if claim.claim > 1:
        publisher.restart()  # an earlier run may have streamed part of an answer
    try:
        try:
            payload = _call(res, job_id, job, claim, publisher, report, deadline, plan, gate)
        except (NoLLMAvailable, Refused) as waiting:
            if isinstance(waiting, NoLLMAvailable) and report.calls:
                raise
            raise _wait_or_fail(res, job_id, claim, report, deadline, waiting) from None
    except Parked:
        _measure(res, job, claim, report, ended=None)
        raise
    except JobCancelled:  # the cancel wrote the job's end; this run writes nothing more
        _measure(res, job, claim, report, ended=None)
        raise
    except LLMPoolError as exc:
        state = "expired" if isinstance(exc, JobExpired) else "failed"
        _end(res, publisher, gate, job, claim, report, state, exc.to_dict(), error=exc.code)
        raise
    except Exception as exc:
        error = {"type": "internal_error", "message": f"worker error: {type(exc).__name__}"}
        _end(res, publisher, gate, job, claim, report, "failed", error, error="internal_error")
        raise
    if not publisher.lost:
        _remember(job, payload["content"], res)  # memory first: a client's next turn must see this one
    if not _end(res, publisher, gate, job, claim, report, "succeeded", payload, result=payload):
        log.warning("job %s: finished by another run; this answer is dropped", job_id)
    return payload
