"""Asynchronous jobs: POST /jobs (202 at once), GET /jobs/{id}/events (SSE, resumable), DELETE /jobs/{id}.

GET /jobs/{id} (the record) lives with the chat routes.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.auth import get_principal, may_manage, may_read, owner_of
from api.deps import ApiState, get_state
from api.disconnects import answer_waiting
from api.errors import error_response
from api.job_events import follow_sse
from api.jwt_verify import Principal
from api.model_check import require_served_model
from api.openapi_docs import EVENT_STREAM
from api.routes.chat import JobId
from api.schemas import PollRequest
from api.sse import last_event_id
from api.stream_hub import Waiter
from llmpool.deadlines import prepare_job
from llmpool.errors import JobAlreadyFinished, JobNotFound

router = APIRouter()

IdempotencyKey = Annotated[str | None, Header(max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")]
Caller = Annotated[Principal | None, Depends(get_principal)]  # None while the API is open


def _not_found(job_id: str) -> JSONResponse:
    return error_response(404, {"type": "not_found", "message": f"No job with id {job_id}"})


def _links(job_id: str) -> dict[str, str]:
    return {"url": f"/jobs/{job_id}", "events_url": f"/jobs/{job_id}/events"}


@router.post("/jobs", status_code=202, summary="Submit a chat job and answer at once with its id and URL.")
async def submit_job(body: PollRequest, state: Annotated[ApiState, Depends(get_state)], principal: Caller,
                     idempotency_key: IdempotencyKey = None) -> JSONResponse:
    job = body.to_job(stream=True, now=time.time())
    job = prepare_job(job.model_copy(update={"owner": owner_of(principal)}), state.settings)
    await require_served_model(state, job)  # 404 model_not_found before anything is enqueued
    submitted = await run_in_threadpool(state.client.submit, job, job_id=idempotency_key)
    record: dict[str, Any] | None = None
    if not submitted.created:  # a retried Idempotency-Key: the job it named, as it is now
        record = await run_in_threadpool(state.jobs.get, submitted.job_id)
    links = _links(submitted.job_id)
    content = {"job_id": submitted.job_id, "state": (record or {}).get("state", "queued"), "created": submitted.created,
               **links}
    return JSONResponse(content, status_code=202, headers={"Location": links["url"]})


@router.get("/jobs/{job_id}/events", summary="A job's events as Server-Sent Events; resumes after Last-Event-ID.",
            responses=EVENT_STREAM)
async def job_events(job_id: JobId, request: Request, state: Annotated[ApiState, Depends(get_state)],
                     principal: Caller) -> Response:
    async def answer(waiter: Waiter) -> Response:
        record = await run_in_threadpool(state.jobs.get, job_id)
        if record is None or not may_read(principal, record.get("owner")):  # another's job: as if none
            return _not_found(job_id)
        return await follow_sse(state, waiter, job_id, record, after=last_event_id(request) or (0, 0))

    return await answer_waiting(state.hub, answer)


@router.delete("/jobs/{job_id}", summary="Cancel a queued, waiting or running job.")
async def cancel_job(job_id: JobId, state: Annotated[ApiState, Depends(get_state)], principal: Caller) -> JSONResponse:
    if principal is not None:  # its owner or an admin may cancel it; to anyone else it does not exist
        record = await run_in_threadpool(state.jobs.get, job_id)
        if record is None or not may_manage(principal, record.get("owner")):
            return _not_found(job_id)
    try:
        was = await run_in_threadpool(state.client.cancel, job_id)
    except JobNotFound:
        return _not_found(job_id)
    except JobAlreadyFinished as exc:
        return error_response(409, exc.to_dict(), job_id=job_id)
    return JSONResponse({"job_id": job_id, "state": "cancelled", "was": was})
