"""llmpool: a Celery + Redis worker pool that runs chat jobs against LLM endpoints.

What a backend needs: `Client` to submit jobs and read their outcome, the job and result
models, and the error tree (every failure a job can end with is one of these classes).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmpool.errors import (
    AllEndpointsFailed,
    BadRequest,
    CallerError,
    ConfigError,
    ContextTooLong,
    InvalidJob,
    JobExpired,
    JobFailed,
    JobNotFound,
    LLMPoolError,
    NoLLMAvailable,
    Overloaded,
    RedisFull,
    RedisUnavailable,
    ResultTimeout,
    RetryableError,
    SubmitFailed,
    TooManyAttempts,
)

if TYPE_CHECKING:
    from llmpool.client import Client, JobEvent, Submitted
    from llmpool.schemas import ChatJob, ChatResult, Message, Usage

__version__ = "0.1.0"

# Loaded on first use: every process imports this package (the mock LLM, `llmpool status`), and
# Celery and pydantic are slow to import for the ones that never submit a job.
_LAZY = {"Client": "llmpool.client", "JobEvent": "llmpool.client", "Submitted": "llmpool.client",
         "ChatJob": "llmpool.schemas", "ChatResult": "llmpool.schemas", "Message": "llmpool.schemas",
         "Usage": "llmpool.schemas"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llmpool' has no attribute {name!r}")


__all__ = [
    "Client", "JobEvent", "Submitted", "ChatJob", "ChatResult", "Message", "Usage",
    "LLMPoolError", "ConfigError", "InvalidJob", "RetryableError", "CallerError", "BadRequest",
    "ContextTooLong", "NoLLMAvailable", "AllEndpointsFailed", "JobExpired", "TooManyAttempts",
    "JobFailed", "JobNotFound", "ResultTimeout", "SubmitFailed", "RedisFull", "RedisUnavailable",
    "Overloaded",
]
