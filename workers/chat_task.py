"""The `llmpool.chat` task: decode, claim, run on the best endpoint, settle. Logic lives in llmpool."""

from __future__ import annotations

import logging
import random
import time
from typing import Any, NoReturn

from celery import Task, shared_task
from celery.exceptions import Ignore

from llmpool.deadlines import default_deadline
from llmpool.errors import InvalidJob, JobExpired, LLMPoolError, NoLLMAvailable, Refused, TooManyAttempts
from llmpool.jobs import Claim
from llmpool.resources import Resources, current
from llmpool.runner import run_chat, wait_delay
from llmpool.schemas import ChatJob, Message, parse_job

__all__ = ["chat"]

log = logging.getLogger(__name__)
CLAIM_LEASE_MARGIN = 30.0  # a running job's claim outlives its longest call by this
ADMISSION_JITTER = 0.25  # seconds: refused jobs that wait together come back spread out


class ChatTask(Task):
    Request = "workers.request:ChatRequest"
    # Our own errors are outcomes, not crashes: logged at INFO without a traceback.
    throws = (LLMPoolError,)
    # Waiting jobs are re-queued as often as needed: the job's deadline bounds them, not a count.
    # (retry(max_retries=None) does not mean "unlimited"; it falls back to this attribute.)
    max_retries = None

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """An unexpected crash still ends the job, so no reader waits for it forever."""
        if isinstance(exc, LLMPoolError):
            return
        res = current()
        record = res.jobs.get(task_id) or {}
        if record.get("state") not in ("succeeded", "failed", "expired", "cancelled"):
            res.jobs.finish(task_id, "failed", {"type": "internal_error",
                                                "message": f"worker error: {type(exc).__name__}"})


def _deadline(job: ChatJob, claim: Claim, res: Resources) -> float:
    if job.deadline is not None:
        return job.deadline
    if claim.deadline:
        return claim.deadline
    return (claim.created_at or time.time()) + default_deadline(job.priority, res.settings)


def _messages_with_memory(job: ChatJob, res: Resources) -> ChatJob:
    if not (job.remember and job.thread_id):
        return job
    history = [Message.model_validate(m) for m in res.conversations.history(job.thread_id)]
    return job.model_copy(update={"messages": [*history, *job.messages]}) if history else job


def _remember(job: ChatJob, content: str, res: Resources) -> None:
    if job.remember and job.thread_id:
        turn = [m.model_dump(exclude_none=True) for m in job.messages if m.role == "user"][-1:]
        res.conversations.append(job.thread_id, [*turn, {"role": "assistant", "content": content}])


def _fail(res: Resources, job_id: str, exc: LLMPoolError) -> None:
    state = "expired" if isinstance(exc, JobExpired) else "failed"
    res.jobs.finish(job_id, state, exc.to_dict())


@shared_task(name="llmpool.chat", bind=True, base=ChatTask)
def chat(self: ChatTask, job: Any) -> dict[str, Any]:
    """Answer one chat job; the return value is the ChatResult as JSON."""
    res = current()
    job_id = self.request.id
    try:
        parsed = parse_job(job)
    except InvalidJob as exc:
        _fail(res, job_id, exc)
        raise
    lease = min(res.settings.agent_request_timeout, res.settings.agent_job_deadline) + CLAIM_LEASE_MARGIN
    claim = res.jobs.claim(job_id, worker=self.request.hostname or "?", lease=lease,
                           max_attempts=res.settings.agent_job_max_attempts)
    if claim.verdict == "done":
        log.info("job %s already %s: duplicate delivery skipped", job_id, claim.state)
        record = res.jobs.get(job_id) or {}
        return record.get("result") or {}
    if claim.verdict == "busy":
        log.info("job %s is running elsewhere: duplicate delivery dropped", job_id)
        raise Ignore()
    if claim.verdict == "exhausted":
        too_many = TooManyAttempts(f"job was delivered {claim.attempts} times without finishing")
        _fail(res, job_id, too_many)
        raise too_many
    return _run(self, res, job_id, parsed, claim)


def _requeue(task: ChatTask, res: Resources, job_id: str, delay: float, why: str) -> NoReturn:
    """Put the job back in its queue for `delay` seconds: a waiting job holds no worker thread."""
    res.jobs.release(job_id)
    log.info("job %s waits %.2fs: %s (wait %d)", job_id, delay, why, task.request.retries + 1)
    raise task.retry(countdown=delay)


def _wait_for_llm(task: ChatTask, res: Resources, job_id: str, deadline: float) -> NoReturn:
    """No LLM is selected: look again after a short, growing backoff."""
    delay = wait_delay(task.request.retries, random.random())
    if time.time() + delay >= deadline:
        raise NoLLMAvailable("No LLM available before the job's deadline")
    res.selection_cache.invalidate()
    _requeue(task, res, job_id, delay, "no LLM selected")


def _wait_for_admission(task: ChatTask, res: Resources, job_id: str, deadline: float, refused: Refused) -> NoReturn:
    """Every endpoint refused (busy, rate-limited, breaker open): come back when one could pass."""
    delay = refused.retry_after + random.uniform(0, ADMISSION_JITTER)
    if time.time() + delay >= deadline:
        raise JobExpired("the job's deadline passed while every endpoint refused it",
                         refusals=refused.details.get("refusals"))
    reasons = sorted({str(r["reason"]) for r in refused.details.get("refusals", [])})
    _requeue(task, res, job_id, delay, "refused: " + ", ".join(reasons))


def _run(task: ChatTask, res: Resources, job_id: str, job: ChatJob, claim: Claim) -> dict[str, Any]:
    publisher = res.jobs.publisher(job_id, stream_tokens=job.stream)
    try:
        deadline = _deadline(job, claim, res)
        if time.time() >= deadline:
            raise JobExpired("the job's deadline passed before a worker took it")
        selection = res.selection_cache.get()
        if selection is None or not selection.order:
            _wait_for_llm(task, res, job_id, deadline)
        try:
            result, _ = run_chat(
                _messages_with_memory(job, res), job_id=job_id, candidates=res.candidates(selection, job),
                client=res.llm, publisher=publisher, deadline=deadline, gate=res.gate,
                max_calls=res.settings.agent_job_max_calls,
            )
        except Refused as refused:
            _wait_for_admission(task, res, job_id, deadline, refused)
    except LLMPoolError as exc:
        _fail(res, job_id, exc)
        raise
    if claim.started_at and claim.created_at:
        result.timings.queued = max(0.0, claim.started_at - claim.created_at)
    payload = result.model_dump(mode="json")
    publisher.end("succeeded", payload, endpoint=result.endpoint)
    _remember(job, result.content, res)
    return payload
