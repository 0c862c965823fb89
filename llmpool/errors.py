"""llmpool's one error tree, split by what the caller does next.

- RetryableError: the endpoint failed; the job may try another endpoint (connect error, timeout,
  5xx, 429, a cut stream, a garbled answer).
- CallerError: the job itself is wrong (400/422 from the LLM, context too long); fail the job and
  do not hold it against the endpoint.
- WaitError: nothing to run on yet (no LLM); the job waits or fails at its deadline.
- LocalShortage: a resource of our own ran out (no free connection in this process's HTTP pool);
  the endpoint is not to blame, so nothing is charged to it and the job waits to run again.
- CallCancelled: we ended the call ourselves (a hedged job's other call answered first); nothing
  is charged to the endpoint and the job goes on with the other call.
- ConfigError: the settings are wrong; the process stops at start.

Every error carries `code`, a stable machine name clients can switch on, and a message that never
contains a secret (no headers, no tokens).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LLMPoolError", "ConfigError", "InvalidJob",
    "RetryableError", "EndpointUnreachable", "EndpointTimeout", "FirstTokenTimeout", "RequestTimeout",
    "StreamCut", "IncompleteAnswer", "EndpointStarting", "ServerError", "RateLimited", "EndpointRejected",
    "InvalidResponse",
    "ResponseTooLarge", "LineTooLong", "LocalShortage", "NoFreeConnection", "CallCancelled",
    "CallerError", "BadRequest", "ContextTooLong", "ModelNotFound",
    "WaitError", "NoLLMAvailable", "NoToolCapableLLM", "ToolStepLimit", "Refused", "AllEndpointsFailed",
    "LeaseLost", "JobExpired", "TooManyAttempts",
    "JobFailed", "JobNotFound", "JobCancelled", "JobAlreadyFinished",
    "ResultTimeout", "SubmitFailed", "RedisFull", "Overloaded", "error_from_dict",
]


class LLMPoolError(Exception):
    """Root of every error llmpool raises on purpose."""

    code = "llmpool_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.code, "message": self.message, **self.details}


class ConfigError(LLMPoolError):
    """A setting is missing or has a bad value; raised at start."""

    code = "config_error"


class InvalidJob(LLMPoolError):
    """A submitted job does not validate; nothing was enqueued or run."""

    code = "invalid_job"


# --- the endpoint failed: try another one ---
class RetryableError(LLMPoolError):
    code = "endpoint_error"


class EndpointUnreachable(RetryableError):
    code = "endpoint_unreachable"


class EndpointTimeout(RetryableError):
    code = "endpoint_timeout"


class FirstTokenTimeout(EndpointTimeout):
    code = "first_token_timeout"


class RequestTimeout(EndpointTimeout):
    """The call outlived AGENT_REQUEST_TIMEOUT (or the job's budget) in total, however it trickled."""

    code = "request_timeout"


class StreamCut(RetryableError):
    """The stream ended early; `tokens_sent` says whether the consumer saw partial output."""

    code = "stream_cut"


class IncompleteAnswer(StreamCut):
    """The answer ended (`data: [DONE]`, the body's end) before any choice had a finish_reason.

    llama-cpp-python's server, in its default mode, ends a running stream this way when another
    request arrives: what came so far is not the answer, so the job goes elsewhere (or waits).
    """

    code = "incomplete_answer"


class ServerError(RetryableError):
    code = "server_error"


class EndpointStarting(RetryableError):
    """The server is loading its model (llama.cpp's 503 "Loading model"), or its container is still
    starting: not failing. Settled neutrally, the endpoint paused a few seconds (`retry_after`);
    the job moves on to another candidate or waits, as the health pass marks it "starting"."""

    code = "endpoint_starting"


class RateLimited(RetryableError):
    code = "rate_limited"


class EndpointRejected(RetryableError):
    """401/403/404 and the like: this endpoint is misconfigured, another may work."""

    code = "endpoint_rejected"


class InvalidResponse(RetryableError):
    code = "invalid_response"


class ResponseTooLarge(InvalidResponse):
    """The answer passed AGENT_MAX_RESPONSE_BYTES; reading stopped there, so memory stays bounded."""

    code = "response_too_large"


class LineTooLong(ResponseTooLarge):
    """One SSE line passed AGENT_MAX_LINE_BYTES without ending."""

    code = "line_too_long"


# --- ours ran out, not the endpoint: charge nothing, run the job again later ---
class LocalShortage(LLMPoolError):
    code = "local_shortage"


class NoFreeConnection(LocalShortage):
    """Every connection of this process's own HTTP pool stayed busy for the pool timeout."""

    code = "no_free_connection"


# --- we ended the call ourselves: charge nothing, the job goes on with its other call ---
class CallCancelled(LLMPoolError):
    """A hedged job's call cancelled because the job's other call produced a token first."""

    code = "call_cancelled"


# --- the job is wrong: fail it, charge nothing ---
class CallerError(LLMPoolError):
    code = "bad_request"


class BadRequest(CallerError):
    code = "bad_request"


class ContextTooLong(BadRequest):
    code = "context_too_long"


class ModelNotFound(CallerError):
    """The job names a model no known endpoint serves (nor an alias of one); nothing ran."""

    code = "model_not_found"


# --- nothing to run on ---
class WaitError(LLMPoolError):
    code = "waiting"


class NoLLMAvailable(WaitError):
    code = "no_llm_available"


class NoToolCapableLLM(LLMPoolError):
    """A job asked for the built-in tools and no endpoint that can call tools serves it."""

    code = "no_tool_capable_llm"


class ToolStepLimit(LLMPoolError):
    """The LLM still called tools on the last call of a tool loop, made without tools."""

    code = "tool_step_limit"


class LeaseLost(LLMPoolError):
    """This run no longer holds its job (the lease lapsed and another run took it): it stops here."""

    code = "lease_lost"


class Refused(WaitError):
    """Every candidate refused admission (breaker open, busy, rate limit): retry after a while."""

    code = "refused"

    @property
    def retry_after(self) -> float:
        return float(self.details.get("retry_after", 1.0))


class AllEndpointsFailed(LLMPoolError):
    """Every candidate failed with a retryable error within the job's attempt budget."""

    code = "all_endpoints_failed"


class JobExpired(LLMPoolError):
    code = "expired"


class TooManyAttempts(LLMPoolError):
    """The job was delivered more often than AGENT_JOB_MAX_ATTEMPTS without finishing."""

    code = "too_many_attempts"


class JobFailed(LLMPoolError):
    """A job ended in failure for a reason this version does not know by name."""

    code = "failed"


# --- what a client of the pool meets ---
class JobNotFound(LLMPoolError):
    """No job has this id (never submitted, or its record expired)."""

    code = "not_found"


class JobCancelled(LLMPoolError):
    """The job was cancelled (`Client.cancel`, `DELETE /jobs/{id}`): it ran no further and never will."""

    code = "cancelled"


class JobAlreadyFinished(LLMPoolError):
    """A cancel came too late: the job had ended already (its state is in `details`)."""

    code = "job_finished"


class ResultTimeout(LLMPoolError):
    """The job had not finished when the caller stopped waiting; it may still finish later."""

    code = "wait_timeout"


class SubmitFailed(LLMPoolError):
    """The job could not be handed to the broker; nothing will run it."""

    code = "submit_failed"


class Overloaded(LLMPoolError):
    """A limit of the API's own was reached (waiting clients, Redis connections); Redis itself is fine.

    Nothing was enqueued; retry after a moment.
    """

    code = "overloaded"


class RedisFull(SubmitFailed):
    """Redis is at its maxmemory (noeviction) and refused the job; nothing of it was kept.

    Not an outage: Redis answers, and reads (records, streams) still work. Submit again once it
    has room (finished jobs' records expire, or the operator raises maxmemory).
    """

    code = "redis_full"


class RedisUnavailable(SubmitFailed):
    """Redis (or the master the Sentinels name) did not answer at submit; nothing was stored, or
    what was stored is published by the sweep once Redis is back. Retry after a moment."""

    code = "redis_unavailable"


def _by_code() -> dict[str, type[LLMPoolError]]:
    found: dict[str, type[LLMPoolError]] = {}
    pending: list[type[LLMPoolError]] = [LLMPoolError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)  # a branch's own code wins over a subclass sharing it
        pending.extend(cls.__subclasses__())
    return found


def error_from_dict(data: dict[str, Any]) -> LLMPoolError:
    """The error a job record stores (`to_dict()`), as an exception of its own class again."""
    details = {k: v for k, v in data.items() if k not in ("type", "message")}
    cls = _by_code().get(str(data.get("type")), JobFailed)
    error = cls(str(data.get("message") or "job failed"), **details)
    if cls is JobFailed and data.get("type"):
        error.code = str(data["type"])  # keep the stored name even when this version lacks the class
    return error
