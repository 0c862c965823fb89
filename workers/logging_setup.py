"""Celery processes (worker, control worker, beat) log through llmpool's one configuration.

Connecting `setup_logging` tells Celery to leave logging to us (its own format would drop the job
fields and ignore AGENT_LOG_FORMAT). Celery's `--loglevel` stays the level, as `llmpool up` and
compose pass it from AGENT_LOG_LEVEL; AGENT_DEBUG_MODE turns DEBUG on either way. A chat task binds
its job id to every line logged while it runs (prerun to postrun, so Celery's own success line is
included); the lines Celery logs about a chat task from elsewhere name it in their arguments.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import signals

from llmpool.logs import bind_job, configure_logging, set_identity, unbind_job
from llmpool.settings import get_settings

__all__ = ["ChatTaskLines", "HIDDEN_POOL_ARGS"]

CHAT_TASK = "llmpool.chat"
SERVICES = ("worker", "beat", "flower")
# Celery's DEBUG line for a task handed to the pool shows the raw message, message text included.
HIDDEN_POOL_ARGS = "<task message hidden>"


def _service() -> str:
    return next((word for word in sys.argv[1:] if word in SERVICES), "celery")


class ChatTaskLines(logging.Filter):
    """Celery's lines about a chat task (received, succeeded, failed) get its job id; the pool's DEBUG
    line that repeats the whole message gets no message at all."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict) and args.get("name") == CHAT_TASK and getattr(record, "job_id", None) is None:
            record.job_id = args.get("id")
        if record.name == "celery.pool" and str(record.msg).startswith("TaskPool: Apply"):
            record.msg, record.args = "TaskPool: Apply %s", (HIDDEN_POOL_ARGS,)
        return True


@signals.setup_logging.connect
def _configure(loglevel: Any = None, **_: Any) -> None:
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else loglevel
    handler = configure_logging(get_settings(), service=_service(), level=level if isinstance(level, int) else None)
    handler.addFilter(ChatTaskLines())


@signals.celeryd_init.connect  # before Celery sets up logging: every line names the node
def _name_the_node(sender: Any = None, **_: Any) -> None:
    if sender:
        set_identity(node=str(sender))


@signals.task_prerun.connect
def _bind_chat_job(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id and getattr(task, "name", None) == CHAT_TASK:
        bind_job(task_id)


@signals.task_postrun.connect
def _unbind_job(**_: Any) -> None:
    unbind_job()  # this thread's next task starts with no job bound
