"""One logging configuration for every llmpool process: human lines by default, JSON lines with
AGENT_LOG_FORMAT=json, and the job a line is about on every such line.

The chat task binds the job (id, attempt) to a context variable while it runs and the runner adds
the endpoint it is calling; a filter on the one root handler copies them onto each record, so
every line logged while a job runs carries them, whoever logs it (Celery, httpx, our modules).
A line about a job logged elsewhere (the sweep, the lease thread) passes them in `extra`.
Secrets that the settings hold are masked in every line, whatever logged them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

from llmpool.auth import container_bearer_token
from llmpool.settings import SECRET_FIELDS, Settings

__all__ = ["JOB_FIELDS", "configure_logging", "bind_job", "unbind_job", "job_context", "set_job_field",
           "set_identity", "job_fields", "JobFields", "HumanFormatter", "JsonFormatter", "MASK"]

JOB_FIELDS = ("job_id", "endpoint", "attempt")
MASK = "***"
# Loggers that bring handlers of their own (uvicorn's config): their lines go through ours instead.
ADOPTED = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery.task", "celery.redirected")
# One line per HTTP request (httpx) is noise at INFO; AGENT_DEBUG_MODE shows them.
CHATTY = ("httpx", "httpcore")

_job: ContextVar[dict[str, Any] | None] = ContextVar("llmpool_job", default=None)
_identity: dict[str, str | None] = {"service": "llmpool", "node": None}


def bind_job(job_id: str, **fields: Any) -> Token[dict[str, Any] | None]:
    """From now on in this context, log lines are about `job_id` (and `attempt`, `endpoint`)."""
    return _job.set({"job_id": job_id, **fields})


def unbind_job(token: Token[dict[str, Any] | None] | None = None) -> None:
    """Lines are about no job any more (the thread runs the next task with a clean slate)."""
    if token is not None:
        _job.reset(token)
    else:
        _job.set(None)


def set_job_field(name: str, value: Any) -> None:
    """Set `attempt` or `endpoint` on the job bound in this context; nothing when none is bound."""
    bound = _job.get()
    if bound is not None:
        _job.set({**bound, name: value})


def job_fields() -> dict[str, Any]:
    """The job bound in this context, or {}."""
    return dict(_job.get() or {})


@contextmanager
def job_context(job_id: str, **fields: Any) -> Iterator[None]:
    token = bind_job(job_id, **fields)
    try:
        yield
    finally:
        unbind_job(token)


def set_identity(*, service: str | None = None, node: str | None = None) -> None:
    """Name the process in every line: its service (worker, beat, api, ...) and Celery node name."""
    if service is not None:
        _identity["service"] = service
    if node is not None:
        _identity["node"] = node


class JobFields(logging.Filter):
    """Copies the bound job's fields onto each record, unless the record names its own (`extra`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _job.get() or {}
        for name in JOB_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, bound.get(name))
        return True


class _Masking(logging.Formatter):
    """A formatter that masks the given secrets in whatever it produced."""

    def __init__(self, secrets: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class HumanFormatter(_Masking):
    """`2026-01-01 12:00:00,123 INFO worker[123] llmpool.runner: message [job=... endpoint=... attempt=2]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(secrets, fmt="%(asctime)s %(levelname)s %(who)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        node = _identity["node"]
        record.who = f"{_identity['service']}[{record.process}]" + (f" {node}" if node else "")
        text = super().format(record)
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            text += f" [job={job_id} endpoint={getattr(record, 'endpoint', None) or '-'}" \
                    f" attempt={getattr(record, 'attempt', None) or '-'}]"
        return self.mask(text)


class JsonFormatter(_Masking):
    """One JSON object a line: ts, level, service, node, pid, logger, message, job fields, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "service": _identity["service"], "pid": record.process,
            "logger": record.name, "message": record.getMessage(),
        }
        if _identity["node"]:
            line["node"] = _identity["node"]
        if getattr(record, "job_id", None) is not None:
            line.update({name: getattr(record, name, None) for name in JOB_FIELDS})
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        return self.mask(json.dumps(line, default=str))


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold, and the bearer token made from them."""
    values = [getattr(settings, name) for name in SECRET_FIELDS]
    found = [v.get_secret_value() for v in values if v is not None]
    if settings.agent_flower_basic_auth is not None:  # the password alone shows in an auth header's decoding
        found.append(settings.agent_flower_basic_auth.get_secret_value().partition(":")[2])
    token = container_bearer_token(settings)
    return [*found, *([token] if token else [])]


_handler: logging.Handler | None = None


def configure_logging(settings: Settings, *, service: str, level: int | None = None,
                      stream: TextIO | None = None) -> logging.Handler:
    """Make the root logger write through one handler of ours; again replaces it (settings reload).

    `level`: the process's level when its command line gives one (Celery's --loglevel), else
    AGENT_LOG_LEVEL; AGENT_DEBUG_MODE makes it DEBUG either way.
    """
    global _handler
    set_identity(service=service)
    chosen = logging.DEBUG if settings.agent_debug_mode else (level or settings.log_level)
    handler = logging.StreamHandler(stream or sys.stderr)
    secrets = secrets_of(settings)
    handler.setFormatter(JsonFormatter(secrets) if settings.agent_log_format == "json" else HumanFormatter(secrets))
    handler.addFilter(JobFields())
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h is not _handler and not _is_default_stream_handler(h)]
    root.addHandler(handler)
    root.setLevel(chosen)
    _handler = handler
    for name in ADOPTED:
        adopted = logging.getLogger(name)
        adopted.handlers = []
        adopted.propagate = True
    for name in CHATTY:
        logging.getLogger(name).setLevel(chosen if chosen <= logging.DEBUG else max(chosen, logging.WARNING))
    return handler


def _is_default_stream_handler(handler: logging.Handler) -> bool:
    """A plain stream handler someone added before us (logging.basicConfig, Celery's, tornado's)."""
    return type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout,
                                                                          sys.__stderr__, sys.__stdout__)
