"""OpenAI-compatible routes: `POST /v1/chat/completions` (plain and streamed) and `GET /v1/models`.

A job runs as on /poll_requests: Client.submit, then the stream hub for its events. A failover
after part of an answer was streamed cannot be taken back from an OpenAI client (it appends every
delta), so the stream then ends with an error event (`stream_restarted`) instead of gluing a second
answer to the first; a failover before the first token is invisible. The whole answer stays in the
job's record (GET /jobs/{id}, or the same request again with its Idempotency-Key).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.auth import get_principal, owner_of
from api.deps import ApiState, get_state
from api.disconnects import FollowingStream, answer_waiting, unless_disconnected
from api.jwt_verify import Principal
from api.model_check import require_served_model
from api.openai_errors import openai_error
from api.openai_format import DONE, Answer, chunk, completion, ending_chunks, model_list, sse, step_delta
from api.openai_schemas import ChatCompletionRequest, unsupported_field
from api.stream_hub import Waiter, WaitTimeout
from llmpool.deadlines import prepare_job
from llmpool.jobs import FINAL_STATES
from llmpool.model_choice import model_ids, serving, wanted_model
from llmpool.schemas import ChatJob, Priority
from llmpool.status_codes import http_status_for

router = APIRouter(prefix="/v1", tags=["openai"])

WAIT_GRACE = 10.0  # past the job's deadline, how long the route still waits for its end event
SSE = "text/event-stream"
MAX_DEADLINE = 7 * 86_400  # seconds ahead: a deadline past it is a client's mistake (or inf)
KEY_PATTERN = r"^[A-Za-z0-9._:-]+$"
RESTARTED = ("The answer was restarted on another endpoint after part of it had been streamed; the "
             "stream ends here so that two answers are not joined. The full answer is in GET /jobs/{id}, "
             "or send the request again with the same Idempotency-Key")


def _job_error(job_id: str, error: dict[str, Any] | None) -> JSONResponse:
    error = error or {"type": "failed", "message": "job failed"}
    code = str(error.get("type") or "failed")
    return openai_error(http_status_for(code), str(error.get("message") or "job failed"), code=code,
                        param=error.get("param"), headers={"X-Job-Id": job_id})


def _stream_error(code: str, message: str) -> str:
    return sse({"error": {"message": message, "type": "server_error", "param": None, "code": code}})


@router.post("/chat/completions", summary="Create a chat completion (OpenAI-compatible).")
async def chat_completions(
    body: ChatCompletionRequest, request: Request, state: Annotated[ApiState, Depends(get_state)],
    principal: Annotated[Principal | None, Depends(get_principal)],
    x_llmpool_priority: Annotated[Priority, Header()] = "default",
    x_llmpool_deadline: Annotated[float | None, Header(gt=0, description="unix time, seconds")] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200, pattern=KEY_PATTERN)] = None,
    x_llmpool_tools: Annotated[Literal["builtin"] | None, Header(description="the worker's built-in tools")] = None,
) -> Response:
    unsupported = unsupported_field(body)
    if x_llmpool_tools and body.tools:  # built-in and client tools are never mixed in one job
        return openai_error(400, "X-LLMPool-Tools: builtin and a request's own tools cannot be combined",
                            code="unsupported_parameter", param="tools")
    if unsupported is not None:
        return openai_error(400, f"Unsupported value for '{unsupported[0]}': {unsupported[1]}",
                            code="unsupported_parameter", param=unsupported[0])
    if x_llmpool_deadline is not None and not time.time() < x_llmpool_deadline <= time.time() + MAX_DEADLINE:
        return openai_error(422, "X-LLMPool-Deadline must be a unix time in the future, at most 7 days ahead",
                            code="invalid_request", param="X-LLMPool-Deadline")
    job = body.to_job(priority=x_llmpool_priority, deadline=x_llmpool_deadline)
    if x_llmpool_tools:
        job = job.model_copy(update={"tools": x_llmpool_tools})
    job = prepare_job(job.model_copy(update={"owner": owner_of(principal)}), state.settings)  # the caller's job
    await require_served_model(state, job)  # 404 model_not_found before anything is enqueued
    return await answer_waiting(state.hub, lambda waiter: _run(request, state, waiter, job, body, idempotency_key))


async def _run(request: Request, state: ApiState, waiter: Waiter, job: ChatJob, body: ChatCompletionRequest,
               idempotency_key: str | None) -> Response:
    submitted = await run_in_threadpool(state.client.submit, job, job_id=idempotency_key)
    job_id = submitted.job_id
    answer = Answer(id=f"chatcmpl-{job_id}", created=int(time.time()), model=body.model)
    with_usage = bool(body.stream_options and body.stream_options.include_usage)
    headers = {"X-Job-Id": job_id}
    if not submitted.created:
        record = await run_in_threadpool(state.jobs.get, job_id)
        if record and record.get("state") in FINAL_STATES:  # its stream may be gone: answer from the record
            return _from_record(answer, record, stream=body.stream, with_usage=with_usage, job_id=job_id)
    waiter.follow(state.jobs.stream_key(job_id), until=(job.deadline or 0) + WAIT_GRACE)
    events = waiter.events()
    try:
        first = await unless_disconnected(request, anext(events) if body.stream else waiter.end())
    except WaitTimeout:
        return openai_error(504, f"No answer before the job's deadline; see GET /jobs/{job_id}",
                            code="wait_timeout", headers=headers)
    if first.get("type") == "end" and first.get("state") != "succeeded":
        return _job_error(job_id, first.get("data"))
    if not body.stream:
        return JSONResponse(completion(answer, first.get("data") or {}), headers=headers)
    chunks = _chunks(answer, first, events, with_usage=with_usage, job_id=job_id)
    return FollowingStream(waiter, chunks, media_type=SSE, headers=headers)


async def _chunks(answer: Answer, first: dict[str, Any], events: AsyncIterator[dict[str, Any]], *,
                  with_usage: bool, job_id: str) -> AsyncIterator[str]:
    """The job's events as OpenAI chunks, ending with `data: [DONE]` (or an error event)."""
    yield sse(chunk(answer, {"role": "assistant", "content": ""}, with_usage=with_usage))
    sent = False  # content went out: a reset can no longer be hidden
    steps = 0  # built-in tool runs shown (they stand after a reset: a restarted job does not redo them)
    event: dict[str, Any] | None = first
    try:
        while event is not None:
            kind = event.get("type")
            if kind == "token" and event.get("text"):
                yield sse(chunk(answer, {"content": event["text"]}, with_usage=with_usage))
                sent = True
            elif kind == "step":
                yield sse(chunk(answer, step_delta(event.get("data") or {}, steps), with_usage=with_usage))
                steps += 1
            elif kind == "reset" and sent:
                yield _stream_error("stream_restarted", RESTARTED.replace("{id}", job_id))
                return
            elif kind == "end":
                for line in _ending(answer, event, with_usage=with_usage):
                    yield line
                return
            event = await anext(events, None)
    except WaitTimeout:
        yield _stream_error("wait_timeout", f"No answer before the job's deadline; see GET /jobs/{job_id}")


def _ending(answer: Answer, end: dict[str, Any], *, with_usage: bool) -> list[str]:
    data = end.get("data") or {}
    if end.get("state") != "succeeded":
        return [_stream_error(str(data.get("type") or "failed"), str(data.get("message") or "job failed"))]
    return [*(sse(c) for c in ending_chunks(answer, data, with_usage=with_usage)), DONE]


def _from_record(answer: Answer, record: dict[str, Any], *, stream: bool, with_usage: bool,
                 job_id: str) -> Response:
    """A finished job answered again (a retried Idempotency-Key), whole, from its stored record."""
    if record["state"] != "succeeded":
        return _job_error(job_id, record.get("error"))
    result = record.get("result") or {}
    if not stream:
        return JSONResponse(completion(answer, result), headers={"X-Job-Id": job_id})
    lines = [sse(chunk(answer, {"role": "assistant", "content": ""}, with_usage=with_usage))]
    if result.get("content"):
        lines.append(sse(chunk(answer, {"content": result["content"]}, with_usage=with_usage)))
    lines += _ending(answer, {"state": "succeeded", "data": result}, with_usage=with_usage)
    return Response("".join(lines), media_type=SSE, headers={"X-Job-Id": job_id})


@router.get("/models", summary="The models served now: each has at least one healthy endpoint (OpenAI's list).")
async def list_models(state: Annotated[ApiState, Depends(get_state)]) -> JSONResponse:
    selection = await run_in_threadpool(state.registry.selection)
    endpoints = [e for e in (selection.order if selection else []) if e.model_type == "chat"]
    served = model_ids(endpoints)
    aliases = [alias for alias, target in state.settings.agent_model_aliases.items()
               if serving(endpoints, wanted_model(target, endpoints, {}))]
    return JSONResponse(model_list(served + [a for a in aliases if a.lower() not in {m.lower() for m in served}]))
