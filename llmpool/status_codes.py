"""Which HTTP status a failed job maps to: one table, shared by every route that reports jobs."""

from __future__ import annotations

__all__ = ["http_status_for"]

_STATUS = {
    "invalid_job": 422,
    "bad_request": 400,
    "context_too_long": 400,
    "model_not_found": 404,
    "no_llm_available": 503,
    "no_tool_capable_llm": 503,  # tools asked for, no endpoint that calls tools serves the job
    "waiting": 503,
    "expired": 504,
    "overloaded": 503,  # a limit of the API's own (waiting clients, connections): retry later
    "local_shortage": 503,  # ours, not the LLM's (e.g. every connection of our HTTP pool busy)
    "no_free_connection": 503,
    "redis_full": 503,  # Redis is up but at maxmemory: try again later
    "redis_unavailable": 503,
    "submit_failed": 503,  # the broker did not take the job: ours, not an LLM's (502)
    "cancelled": 409,  # the job was cancelled before it answered (DELETE /jobs/{id})
    "job_finished": 409,  # a cancel of a job that had ended already
    "not_found": 404,
}


def http_status_for(error_type: str) -> int:
    """The status for a job that ended with `error_type`; endpoint failures are 502 Bad Gateway."""
    return _STATUS.get(error_type, 502)
