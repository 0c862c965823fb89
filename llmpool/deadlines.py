"""How long a job may take: per-priority defaults, turned into an absolute deadline at submit."""

from __future__ import annotations

import time
from typing import Any

from llmpool.schemas import ChatJob, Priority, parse_job
from llmpool.settings import Settings

__all__ = ["default_deadline", "prepare_job"]


def default_deadline(priority: Priority, settings: Settings) -> float:
    """Seconds a job of this priority may take when it sets no deadline of its own."""
    return {"high": settings.agent_job_deadline_high, "default": settings.agent_job_deadline,
            "low": settings.agent_job_deadline_low}[priority]


def prepare_job(job: ChatJob | dict[str, Any], settings: Settings, *, now: float | None = None) -> ChatJob:
    """Validate a job and give it an absolute deadline (InvalidJob if it does not validate)."""
    parsed = job if isinstance(job, ChatJob) else parse_job(job)
    if parsed.deadline is None:
        start = time.time() if now is None else now
        parsed = parsed.model_copy(update={"deadline": start + default_deadline(parsed.priority, settings)})
    return parsed
