"""How a container misbehaves on purpose: error answers, hangs, cut streams, broken JSON, and
(llmpool.dev.mock_llm.endless) answers that trickle, never end or never fit."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from llmpool.dev.mock_llm.dialects import CUT_FAULTS, cut_answer
from llmpool.dev.mock_llm.endless import ENDLESS_FAULTS, endless_fault
from llmpool.dev.mock_llm.replies import ChatRequest, Reply, context_length_message, error_body
from llmpool.dev.mock_llm.streaming import Timing, stream_body

if TYPE_CHECKING:
    from llmpool.dev.mock_llm.container import Container

__all__ = [
    "DroppedResponse", "NoResponse", "chat_fault", "client_left", "hang", "health_fault", "keep",
]

_tasks: set[asyncio.Task[Any]] = set()
# Set by a response that cuts its connection on purpose, so the error uvicorn logs for it
# ("returned without completing response") is dropped; real errors are still logged.
_dropping: contextvars.ContextVar[bool] = contextvars.ContextVar("mock_dropping", default=False)
_UNFINISHED = "ASGI callable returned without completing response."


def keep(task: asyncio.Task[Any]) -> None:
    """Hold a fire-and-forget task until it ends (the loop keeps only weak references)."""
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class _QuietDrop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_dropping.get() and record.getMessage() == _UNFINISHED)


def install_log_filter() -> None:
    """Silence uvicorn's error line for connections the mock cuts on purpose (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrop) for f in logger.filters):
        logger.addFilter(_QuietDrop())


async def chat_fault(fault: str, container: Container, request: Request, chat: ChatRequest,
                     reply: Reply) -> Response:
    """The answer a chat completion gets under `fault`."""
    if fault == "error500":
        return _error(500, "InternalServerError", "mock fault: internal server error")
    if fault == "error400":
        return _error(400, "BadRequestError", context_length_message(chat))
    if fault == "ratelimit":
        seconds = container.knobs.retry_after
        return _error(429, "RateLimitError", "mock fault: rate limit exceeded",
                      {"Retry-After": str(seconds)})
    if fault == "hang":
        return await hang(container, request)
    if fault == "drop_mid_stream":
        return _dropped(container, chat, reply)
    if fault in ENDLESS_FAULTS:
        return endless_fault(fault, container, chat, reply)
    if fault in CUT_FAULTS:
        timing = Timing(container.knobs.ttft, container.knobs.tokens_per_second)
        return cut_answer(fault, chat, reply, timing, container.knobs.drop_after_tokens)
    # bad_json: a 200 whose body (or SSE line) does not parse.
    broken = f'{{"id":"{reply.id}","object":"chat.completion","choices":[{{"index":0,'
    if chat.stream:
        body = f"data: {broken}\n\ndata: [DONE]\n\n"
        return Response(body, 200, media_type="text/event-stream")
    return Response(broken, 200, media_type="application/json")


def _dropped(container: Container, chat: ChatRequest, reply: Reply) -> Response:
    """A 200 cut after `drop_after_tokens` tokens: SSE chunks, or a truncated JSON body."""
    keep_tokens = container.knobs.drop_after_tokens
    if chat.stream:
        timing = Timing(container.knobs.ttft, container.knobs.tokens_per_second)
        # The role chunk, then K token chunks, then the cut.
        parts = _take(stream_body(chat, reply, timing), keep_tokens + 1)
        return DroppedResponse(parts, "text/event-stream")
    text = json.dumps("".join(reply.tokens[:keep_tokens]))
    head = f'{{"id":"{reply.id}","object":"chat.completion","choices":[{{"message":'
    return DroppedResponse(_one(f'{head}{{"content":{text}'.encode()), "application/json")


async def health_fault(fault: str, container: Container, request: Request,
                       ok_body: dict[str, Any] | None = None) -> Response:
    """The answer GET /health gets under `fault` (hang, error500 or slow_health).

    `ok_body` is what slow_health answers in the end (default {"status": "ok"}).
    """
    if fault == "hang":
        return await hang(container, request)
    if fault == "error500":
        return _error(500, "InternalServerError", "mock fault: internal server error")
    closing = asyncio.create_task(container.closing.wait())
    try:
        await asyncio.wait({closing}, timeout=container.knobs.health_delay)
    finally:
        closing.cancel()
    return JSONResponse(ok_body or {"status": "ok"})


async def hang(container: Container, request: Request) -> Response:
    """Answer nothing until the client leaves, the container stops, or hang_cap passes."""
    if await client_left(request, container.closing, container.knobs.hang_cap):
        return NoResponse()
    return _error(504, "Timeout", "mock fault: hang ended")


async def client_left(request: Request, stop: asyncio.Event, cap: float) -> bool:
    """Wait until the client disconnects (True), `stop` is set or `cap` seconds pass (False)."""
    gone = asyncio.create_task(_client_gone(request.receive))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({gone, stopping}, timeout=cap, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        stopping.cancel()
    return gone.done() and not gone.cancelled()


async def _client_gone(receive: Receive) -> None:
    # After the body, uvicorn's receive() blocks until the client disconnects.
    while (await receive())["type"] != "http.disconnect":
        pass


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None,
           ) -> Response:
    return JSONResponse(error_body(message, kind, status), status, headers=headers)


async def _take(parts: Any, count: int) -> Any:
    """The first `count` items of an async iterator."""
    if count <= 0:
        return
    seen = 0
    async for part in parts:
        yield part
        seen += 1
        if seen >= count:  # stop before waiting for the next token's time
            break


async def _one(part: bytes) -> Any:
    yield part


class DroppedResponse(Response):
    """A 200 that sends its headers and some body, then cuts the TCP connection unfinished."""

    def __init__(self, parts: Any, media_type: str) -> None:
        super().__init__(status_code=200, media_type=media_type)
        self.parts = parts
        # No content-length: the body goes chunked, so a cut leaves it visibly incomplete.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async for part in self.parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        # Returning now, unfinished, makes uvicorn close the transport mid-body.
        _dropping.set(True)


class NoResponse(Response):
    """Sends nothing: the client has already gone (recorded as status 499)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None
