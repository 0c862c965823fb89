"""POST /poll_requests (the TT-Studio agent's chat route) and GET /jobs/{id}."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.auth import get_principal, may_read, owner_of
from api.deps import ApiState, get_state
from api.disconnects import FollowingStream, answer_waiting, unless_disconnected
from api.errors import error_response
from api.job_events import WAIT_GRACE, follow_sse
from api.jwt_verify import Principal
from api.model_check import require_served_model
from api.openapi_docs import CHAT_ANSWERS
from api.schemas import PollRequest
from api.sse import last_event_id, wants_sse
from api.stream_hub import Waiter, WaitTimeout
from api.think import ThinkBlock
from llmpool.deadlines import prepare_job
from llmpool.jobs import FINAL_STATES
from llmpool.schemas import ChatJob
from llmpool.status_codes import http_status_for
from llmpool.tools import builtin_tools

router = APIRouter()

JobId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")]
JOB_ID = re.compile(r"[A-Za-z0-9._:-]+")  # the same rule, for the X-Job-Id header of an SSE reconnect
TEXT = "text/plain; charset=utf-8"


def _stats(result: dict[str, Any]) -> str:
    timings, usage = result.get("timings") or {}, result.get("usage") or {}
    stats = {"tokens_decoded": usage.get("completion_tokens", 0), "ttft": timings.get("ttft"),
             "tpot": timings.get("tpot"), "total_time": timings.get("total"),
             "tokens_estimated": bool(usage.get("estimated"))}  # the server sent no (or too few) counts
    return "[STATS]" + json.dumps(stats)


def _tool_calls_line(tool_calls: list[dict[str, Any]]) -> str:
    """The answer's tool calls (OpenAI's `tool_calls` list) on a line of their own, before [STATS]."""
    return "\n[TOOL_CALLS]" + json.dumps(tool_calls, separators=(",", ":")) + "\n"


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
    """Tokens as they come, then the TT-Studio [STATS] line (or [ERROR] if the job failed late).

    The built-in tools' steps show as the TT-Studio agent showed them, in a <think> block before
    the text that follows them (api/think.py); after a [RESET] the steps so far are shown again."""
    event: dict[str, Any] | None = first
    think = ThinkBlock()
    try:
        while event is not None:
            kind = event.get("type")
            if kind == "token":
                yield think.close() + event["text"]
            elif kind == "step":
                yield think.step(event.get("data") or {})
            elif kind == "reset":
                yield "\n[RESET]\n" + think.again()  # the job restarted elsewhere: drop what came before
            elif kind == "end":
                yield think.close()
                data = event.get("data") or {}
                if event.get("state") == "succeeded" and data.get("tool_calls"):
                    yield _tool_calls_line(data["tool_calls"])
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


@router.post("/poll_requests", summary="Run one chat turn and return (or stream) the answer.",
             responses=CHAT_ANSWERS)
async def poll_requests(
    body: PollRequest, request: Request, state: Annotated[ApiState, Depends(get_state)],
    principal: Annotated[Principal | None, Depends(get_principal)],
    idempotency_key: Annotated[str | None, Header(max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")] = None,
) -> Response:
    job = body.to_job(stream=not _wants_json(request), now=time.time())
    if body.tools is None and state.settings.agent_poll_builtin_tools and builtin_tools(state.settings):
        job = job.model_copy(update={"tools": "auto"})  # as the TT-Studio agent did, when a tool is configured
    job = prepare_job(job.model_copy(update={"owner": owner_of(principal)}), state.settings)
    await require_served_model(state, job)  # 404 model_not_found before anything is enqueued
    return await answer_waiting(state.hub, lambda waiter: _submit_and_wait(request, state, waiter, job,
                                                                           idempotency_key))


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


async def _submit_and_wait(request: Request, state: ApiState, waiter: Waiter, job: ChatJob,
                           idempotency_key: str | None) -> Response:
    """Submit, then wait for the answer: all of it (JSON), or its first event before streaming the rest."""
    if wants_sse(request) and request.headers.get("x-job-id"):
        return await _resume_sse(request, state, waiter, job, request.headers["x-job-id"])
    submitted = await run_in_threadpool(state.client.submit, job, job_id=idempotency_key)
    job_id = submitted.job_id
    if wants_sse(request):  # a retried Idempotency-Key with Last-Event-ID resumes after that event
        record = await run_in_threadpool(state.jobs.get, job_id) or {"state": "queued", "deadline": job.deadline}
        return await follow_sse(state, waiter, job_id, record, after=last_event_id(request) or (0, 0))
    if not submitted.created:
        known = await run_in_threadpool(state.jobs.get, job_id)
        if known and known.get("state") in FINAL_STATES:  # its stream may be gone: answer from the record
            return _from_record(job_id, known)
    waiter.follow(state.jobs.stream_key(job_id), until=(job.deadline or 0) + WAIT_GRACE)
    headers = {"X-Job-Id": job_id}
    if not _wants_json(request) and await run_in_threadpool(_no_llm, state):
        return FollowingStream(waiter, _waiting_stream(waiter.events()), media_type=TEXT, headers=headers)
    events = waiter.events()
    try:
        first = await unless_disconnected(request, anext(events))
        if first.get("type") != "end" and _wants_json(request):
            first = await unless_disconnected(request, waiter.end())
    except WaitTimeout:
        return _timeout(job_id)
    if first.get("type") == "end" and first.get("state") != "succeeded":
        return _failure(job_id, first)
    if _wants_json(request):
        return JSONResponse(_answer(job_id, first.get("data") or {}))
    return FollowingStream(waiter, _text_stream(first, events), media_type=TEXT, headers=headers)


async def _resume_sse(request: Request, state: ApiState, waiter: Waiter, job: ChatJob, job_id: str) -> Response:
    """An SSE client reconnecting with the job's id (X-Job-Id) and Last-Event-ID: nothing is submitted."""
    record = None
    if len(job_id) <= 200 and JOB_ID.fullmatch(job_id):
        record = await run_in_threadpool(state.jobs.get, job_id)
    if record is None or record.get("owner") != getattr(job, "owner", None):  # another's job: as if none
        return error_response(404, {"type": "not_found", "message": f"No job with id {job_id}"})
    return await follow_sse(state, waiter, job_id, record, after=last_event_id(request) or (0, 0))


@router.get("/jobs/{job_id}", summary="A job's state, attempts, endpoint, result or error.")
async def get_job(job_id: JobId, state: Annotated[ApiState, Depends(get_state)],
                  principal: Annotated[Principal | None, Depends(get_principal)]) -> JSONResponse:
    record = await run_in_threadpool(state.jobs.get, job_id)
    if record is None or not may_read(principal, record.get("owner")):  # another's job: as if none
        error = {"type": "not_found", "message": f"No job with id {job_id}"}
        return error_response(404, error)
    return JSONResponse({"job_id": job_id, **record})
