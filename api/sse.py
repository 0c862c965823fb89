"""A job's events as Server-Sent Events: `token`, `step`, `reset`, `tool_calls`, `done` and `error`.

`step` is one run of a built-in tool (llmpool.tool_loop): round, call_id, tool, arguments
(truncated), summary, error, duration, size. Steps are not undone by a `reset`: they happened.

Every event that comes from the job's stream carries the stream entry's id as its SSE `id:`, so a
client that reconnects with `Last-Event-ID` resumes right after the last event it had
(`GET /jobs/{id}/events`, or `POST /poll_requests` with the job's id). `tool_calls` goes out just
before `done` and has no id of its own: a client cut between the two gets both again.

A job whose stream has ended is served from Redis without the stream hub: what remains of its
stream after the client's position (XRANGE), or, once the stream's TTL has passed, its `done` or
`error` built from the job record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

from fastapi import Request

from api.stream_hub import WaitTimeout, parse_entry_id
from llmpool.status_codes import http_status_for

__all__ = ["EVENT_STREAM", "wants_sse", "last_event_id", "sse_events", "record_events", "format_event",
           "KEEPALIVE"]

EVENT_STREAM = "text/event-stream"
KEEPALIVE = ": keep-alive\n\n"
KEEPALIVE_EVERY = 15.0  # seconds: well inside the usual proxy read timeouts (nginx: 60 s)
EntryId = tuple[int, int]


def wants_sse(request: Request) -> bool:
    return EVENT_STREAM in request.headers.get("accept", "")


def last_event_id(request: Request) -> EntryId | None:
    """The client's Last-Event-ID header as a stream entry id; None when absent or not one of ours."""
    raw = request.headers.get("last-event-id")
    return parse_entry_id(raw) if raw else None


def format_event(kind: str, data: dict[str, Any], event_id: str | None = None) -> str:
    lines = [f"event: {kind}"]
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))  # one line: JSON escapes newlines
    return "\n".join(lines) + "\n\n"


def _end_events(job_id: str, event: dict[str, Any]) -> list[str]:
    """The `end` of a job's stream as SSE: `tool_calls` (if any) and `done`, or `error`."""
    data = event.get("data") or {}
    state = str(event.get("state"))
    if state == "succeeded":
        out = []
        if data.get("tool_calls"):
            out.append(format_event("tool_calls", {"job_id": job_id, "tool_calls": data["tool_calls"]}))
        return [*out, format_event("done", {"job_id": job_id, **data}, event.get("id"))]
    status = http_status_for(str(data.get("type")))
    return [format_event("error", {"job_id": job_id, "state": state, "status": status, "error": data},
                         event.get("id"))]


def _one(job_id: str, event: dict[str, Any]) -> list[str]:
    kind = event.get("type")
    if kind == "token":
        return [format_event("token", {"text": event.get("text", "")}, event.get("id"))]
    if kind == "step":
        return [format_event("step", event.get("data") or {}, event.get("id"))]
    if kind == "reset":  # the job restarted elsewhere: drop the text received so far
        return [format_event("reset", {}, event.get("id"))]
    if kind == "end":
        return _end_events(job_id, event)
    return []


class EventSource(Protocol):
    async def next(self) -> dict[str, Any]: ...


async def _with_keepalives(source: EventSource, every: float) -> AsyncIterator[dict[str, Any] | None]:
    """The source's events up to its `end`, and None whenever `every` seconds pass without one.

    The pending read is kept across keep-alives, not cancelled: no event is lost in between.
    """
    pending: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(source.next())
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield None
                continue
            event, pending = pending.result(), None  # raises what the read raised (WaitTimeout)
            yield event
            if event.get("type") == "end":
                return
    finally:
        if pending is not None:
            pending.cancel()


async def sse_events(job_id: str, source: EventSource, *, keepalive: float = KEEPALIVE_EVERY) -> AsyncIterator[str]:
    """The job's stream events as SSE, ending after its end (or an `error` when the wait runs out);
    a comment line every `keepalive` seconds of silence keeps proxies from cutting a waiting client."""
    try:
        async for event in _with_keepalives(source, keepalive):
            for chunk in _one(job_id, event) if event is not None else [KEEPALIVE]:
                yield chunk
    except WaitTimeout:
        error = {"type": "wait_timeout", "message": f"No answer before the job's deadline; see GET /jobs/{job_id}"}
        yield format_event("error", {"job_id": job_id, "status": 504, "error": error})


async def record_events(job_id: str, entries: Iterable[dict[str, Any]]) -> AsyncIterator[str]:
    """Events already read (a finished job's remaining stream, or its end from the record) as SSE."""
    for event in entries:
        for chunk in _one(job_id, event):
            yield chunk
