"""Submitting chat jobs: validation, the job record, the queue, and argsrepr for Flower."""

from __future__ import annotations

import time
import uuid
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from llmpool.jobs import JobStore
from llmpool.schemas import ChatJob, parse_job, queue_for
from llmpool.settings import Settings
from workers.request import job_repr

__all__ = ["submit_chat", "prepare_job", "default_deadline"]


def prepare_job(job: ChatJob | dict[str, Any], settings: Settings) -> ChatJob:
    """Validate a job and give it an absolute deadline (InvalidJob if it does not validate)."""
    parsed = job if isinstance(job, ChatJob) else parse_job(job)
    if parsed.deadline is None:
        parsed = parsed.model_copy(update={"deadline": time.time() + default_deadline(parsed, settings)})
    return parsed


def default_deadline(job: ChatJob, settings: Settings) -> float:
    """Seconds a job of this priority may take when it sets no deadline of its own."""
    return {"high": settings.agent_job_deadline_high, "default": settings.agent_job_deadline,
            "low": settings.agent_job_deadline_low}[job.priority]


def submit_chat(
    app: Celery, store: JobStore, job: ChatJob, *, job_id: str | None = None,
) -> tuple[AsyncResult, bool]:
    """Enqueue a prepared job on its priority queue; `job_id` doubles as an idempotency key.

    Returns the result handle and whether this call created the job (False: the id was known
    already and nothing new was enqueued).
    """
    job_id = job_id or uuid.uuid4().hex
    queue = queue_for(job.priority)
    created = store.create(job_id, queue=queue, deadline=job.deadline or 0.0, summary=job.summary())
    if created:
        payload = job.model_dump(mode="json", exclude_none=True)
        app.send_task(
            "llmpool.chat", args=[payload], task_id=job_id, queue=queue,
            argsrepr=repr((job_repr(payload),)), kwargsrepr="{}",
        )
    return AsyncResult(job_id, app=app), created
