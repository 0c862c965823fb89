"""Following one job's events as SSE from any route: live through the stream hub, or, for a job
that has ended, straight from Redis (api/sse.py says what the events are)."""

from __future__ import annotations

import time
from typing import Any

from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import ApiState
from api.disconnects import FollowingStream
from api.sse import EVENT_STREAM, record_events, sse_events
from api.stream_hub import Waiter
from llmpool.jobs import FINAL_STATES

__all__ = ["follow_sse", "WAIT_GRACE", "SSE_HEADERS"]

WAIT_GRACE = 10.0  # past the job's deadline, how long the shim still waits for its end event
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold events back


def _end_from_record(record: dict[str, Any]) -> dict[str, Any]:
    state = record["state"]
    data = record.get("result") if state == "succeeded" else record.get("error")
    return {"type": "end", "state": state, "data": data or {}}


async def follow_sse(state: ApiState, waiter: Waiter, job_id: str, record: dict[str, Any], *,
                     after: tuple[int, int] = (0, 0)) -> Response:
    """The job's events after entry `after` as an SSE response; `record` is its record, read just now."""
    headers = {"X-Job-Id": job_id, **SSE_HEADERS}
    if record.get("state") in FINAL_STATES:
        entries = await run_in_threadpool(state.jobs.stream_after, job_id, after)
        if entries is None:  # the stream's TTL passed: the record still says how it ended
            entries = [_end_from_record(record)]
        return StreamingResponse(record_events(job_id, entries), media_type=EVENT_STREAM, headers=headers)
    until = max(float(record.get("deadline") or 0.0), time.time()) + WAIT_GRACE
    waiter.follow(state.jobs.stream_key(job_id), until=until, after=after)
    return FollowingStream(waiter, sse_events(job_id, waiter), media_type=EVENT_STREAM, headers=headers)
