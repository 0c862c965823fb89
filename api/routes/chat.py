"""POST /poll_requests (the TT-Studio agent's chat route) and GET /jobs/{id}."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import ApiState, get_state
from api.errors import error_response
from api.job_events import WaitTimeout, job_events
from api.schemas import PollRequest
from llmpool.deadlines import prepare_job
from llmpool.jobs import FINAL_STATES
from llmpool.status_codes import http_status_for

router = APIRouter()

JobId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")]
WAIT_GRACE = 10.0  # past the job's deadline, how long the shim still waits for its end event


def _stats(result: dict[str, Any]) -> str:
    timings, usage = result.get("timings") or {}, result.get("usage") or {}
    stats = {"tokens_decoded": usage.get("completion_tokens", 0), "ttft": timings.get("ttft"),
             "tpot": timings.get("tpot"), "total_time": timings.get("total")}
    return "[STATS]" + json.dumps(stats)


def _answer(job_id: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"status": "succeeded", "job_id": job_id, "answer": result.get("content", ""), **result}


def _failure(job_id: str, event: dict[str, Any]) -> JSONResponse:
    error = event.get("data") or {"type": "failed", "message": "job failed"}
    return error_response(http_status_for(str(error.get("type"))), error, job_id=job_id,
                          job_status=event.get("state"))


def _from_record(job_id: str, record: dict[str, Any]) -> JSONResponse:
    """A finished job answered again (a retried Idempotency-Key), from its stored record."""
    if record["state"] == "succeeded":
        return JSONResponse(_answer(job_id, record.get("result") or {}))
    return _failure(job_id, {"state": record["state"], "data": record.get("error")})


def _timeout(job_id: str) -> JSONResponse:
    error = {"type": "wait_timeout",
             "message": f"No answer before the job's deadline; see GET /jobs/{job_id}"}
    return error_response(504, error, job_id=job_id)


async def _text_stream(first: dict[str, Any], events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Tokens as they come, then the TT-Studio [STATS] line (or [ERROR] if the job failed late)."""
    event: dict[str, Any] | None = first
    try:
        while event is not None:
            kind = event.get("type")
            if kind == "token":
                yield event["text"]
            elif kind == "reset":
                yield "\n[RESET]\n"  # the job restarted elsewhere: drop what came before
            elif kind == "end":
                data = event.get("data") or {}
                yield _stats(data) if event.get("state") == "succeeded" else "\n[ERROR]" + json.dumps(data)
                return
            event = await anext(events, None)
    except WaitTimeout:
        yield "\n[ERROR]" + json.dumps({"type": "wait_timeout", "message": "no answer before the deadline"})


# The TT-Studio agent's line for a chat that arrives while no LLM is up; its clients parse it.
WAITING_LINE = ('data: {"status": "waiting", "message": "Agent is still initializing, '
                'waiting for LLM to become available..."}\n\n')


async def _waiting_stream(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """The waiting line at once, then the answer when an LLM appears (or [ERROR] at the deadline)."""
    yield WAITING_LINE
    try:
        first = await anext(events)
    except WaitTimeout:
        yield "[ERROR]" + json.dumps({"type": "wait_timeout", "message": "no answer before the deadline"})
        return
    async for chunk in _text_stream(first, events):
        yield chunk


def _no_llm(state: ApiState) -> bool:
    selection = state.registry.selection()
    return selection is None or selection.current is None


@router.post("/poll_requests", summary="Run one chat turn and return (or stream) the answer.")
async def poll_requests(
    body: PollRequest, request: Request, state: Annotated[ApiState, Depends(get_state)],
    idempotency_key: Annotated[str | None, Header(max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")] = None,
) -> Response:
    wants_json = "application/json" in request.headers.get("accept", "")
    job = prepare_job(body.to_job(stream=not wants_json, now=time.time()), state.settings)
    submitted = await run_in_threadpool(state.client.submit, job, job_id=idempotency_key)
    job_id = submitted.job_id
    if not submitted.created:
        known = await run_in_threadpool(state.jobs.get, job_id)
        if known and known.get("state") in FINAL_STATES:  # its stream may be gone: answer from the record
            return _from_record(job_id, known)
    events = job_events(state.aredis, state.jobs.stream_key(job_id), until=(job.deadline or 0) + WAIT_GRACE)
    if not wants_json and await run_in_threadpool(_no_llm, state):
        return StreamingResponse(_waiting_stream(events), media_type="text/plain; charset=utf-8",
                                 headers={"X-Job-Id": job_id})
    try:
        first = await anext(events)
    except WaitTimeout:
        return _timeout(job_id)
    if first.get("type") == "end" and first.get("state") != "succeeded":
        return _failure(job_id, first)
    if wants_json:
        if first.get("type") != "end":
            try:
                first = [e async for e in events if e.get("type") == "end"][-1]
            except WaitTimeout:
                return _timeout(job_id)
            if first.get("state") != "succeeded":
                return _failure(job_id, first)
        return JSONResponse(_answer(job_id, first.get("data") or {}))
    return StreamingResponse(_text_stream(first, events), media_type="text/plain; charset=utf-8",
                             headers={"X-Job-Id": job_id})


@router.get("/jobs/{job_id}", summary="A job's state, attempts, endpoint, result or error.")
async def get_job(job_id: JobId, state: Annotated[ApiState, Depends(get_state)]) -> JSONResponse:
    record = await run_in_threadpool(state.jobs.get, job_id)
    if record is None:
        error = {"type": "not_found", "message": f"No job with id {job_id}"}
        return error_response(404, error)
    return JSONResponse({"job_id": job_id, **record})
