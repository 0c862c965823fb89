"""Descriptions of chat jobs that name no message text: for Flower, task events and logs."""

from __future__ import annotations

from typing import Any

__all__ = ["job_repr"]


def job_repr(job: Any) -> str:
    """A description of a raw job argument that names no message text."""
    if isinstance(job, dict):
        messages = job.get("messages")
        count = len(messages) if isinstance(messages, list) else "?"
        extra = f", thread={job['thread_id']}" if isinstance(job.get("thread_id"), str) else ""
        return f"<chat job: {count} messages, priority={job.get('priority', 'default')}{extra}>"
    return "<chat job>"
