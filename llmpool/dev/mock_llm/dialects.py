"""How real servers other than vLLM end (or refuse) an answer, played on purpose.

- `send_usage: false` (a knob): never a usage chunk, whatever `stream_options` asks, and no
  `usage` in whole answers either (a server that reports none). llama-cpp-python's own dialect,
  no usage in streams but usage in whole answers, is its flavour's (flavors.py).
- `interrupt_requests: true` (a knob): a new chat request ends every stream running on the
  container: its next chunk is `data: [DONE]`, with no finish_reason, as llama-cpp-python's server
  does in its default mode (`interrupt_requests`, abetlen/llama-cpp-python#867).
- `cut_stream` (a fault): a stream of `drop_after_tokens` tokens, then `data: [DONE]` with no
  choice ever finished, as llama-cpp-python's server (default `interrupt_requests`) ends a running
  stream when another request arrives (abetlen/llama-cpp-python#867); a whole answer comes back
  empty with `finish_reason: null`.
- `cut_stream_eof` (a fault): the same tokens, then the body simply ends (no [DONE]).
- `validation_500` (a fault): a request llama-cpp-python's request model refuses (a role it
  does not know, `developer` included; an assistant `content: null`; `messages` not a list:
  `malformed_body`) gets a 500 whose message is a Python traceback, as that server answers it;
  a well-formed request is answered as usual.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from llmpool.dev.mock_llm.replies import ChatRequest, Reply, chunk, error_body, sse
from llmpool.dev.mock_llm.streaming import Timing

__all__ = ["CUT_FAULTS", "cut_answer", "interrupt_running", "interruptible", "malformed_body", "traceback_500",
           "without_usage"]

CUT_FAULTS = ("cut_stream", "cut_stream_eof")
ROLES = ("system", "user", "assistant", "tool")  # llama-cpp-python's; no "developer"
# The streams running on each container, each with the flag that ends it (interrupt_requests).
_running: weakref.WeakKeyDictionary[Any, set[asyncio.Event]] = weakref.WeakKeyDictionary()


def without_usage(request: ChatRequest) -> ChatRequest:
    """The request as a server that never reports usage reads it: no usage chunk is asked for."""
    return dataclasses.replace(request, include_usage=False, continuous_usage=False)


def malformed_body(raw: bytes) -> str | None:
    """What llama-cpp-python 0.3's request model answers with a 500 in a chat body, or None.

    As the real server was seen to answer: `messages` not a list; a role other than system, user,
    assistant, tool (so `developer` too); an assistant `content: null` (with or without tool_calls;
    a missing content or `""` is fine); a missing content on any other role (a user's `null` is
    fine); a tool message without tool_call_id. Anything else (not JSON, no messages) is left to
    the mock's own 400.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    messages = body.get("messages") if isinstance(body, dict) else None
    if messages is None:
        return None
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    for i, message in enumerate(messages):
        problem = _malformed(message) if isinstance(message, dict) else "Input should be a valid dictionary"
        if problem:
            return f"messages.{i}.{problem}"
    return None


def _malformed(message: dict[str, Any]) -> str | None:
    role = message.get("role")
    if role not in ROLES:
        return f"role: Input should be 'system', 'user', 'assistant' or 'tool' (got {role!r})"
    if role == "assistant":
        return "content: Input should be a valid string" if "content" in message and message["content"] is None \
            else None
    if "content" not in message:
        return "content: Field required"
    if role == "tool" and "tool_call_id" not in message:
        return "tool_call_id: Field required"
    return None


def traceback_500(problem: str) -> Response:
    """A 500 whose message is a Python traceback: what an unhandled validation error looks like."""
    trace = ("Traceback (most recent call last):\n"
             '  File "/app/llama_cpp/server/app.py", line 480, in create_chat_completion\n'
             "    return await run_in_threadpool(llama.create_chat_completion, **kwargs)\n"
             '  File "/app/llama_cpp/llama_chat_format.py", line 220, in format_chat\n'
             f"    raise ValueError({problem!r})\nValueError: {problem}")
    return JSONResponse(error_body(trace, "internal_server_error", 500), 500)


def cut_answer(fault: str, request: ChatRequest, reply: Reply, timing: Timing, keep: int) -> Response:
    """The first `keep` tokens of `reply` and no finish_reason: then [DONE] (`cut_stream`) or the end."""
    if not request.stream:
        body = {"id": reply.id, "object": "chat.completion", "model": request.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        return JSONResponse(body)
    return StreamingResponse(_cut_stream(request, reply, timing, keep, done=fault == "cut_stream"),
                             media_type="text/event-stream")


async def _cut_stream(request: ChatRequest, reply: Reply, timing: Timing, keep: int, *, done: bool) -> Any:
    await timing.wait(0)
    yield sse(chunk(reply, request.model, {"role": "assistant", "content": ""}))
    for i, token in enumerate(reply.tokens[:keep]):
        await timing.wait(i)
        yield sse(chunk(reply, request.model, {"content": token}))
    if done:
        yield sse("[DONE]")


def interrupt_running(container: Any) -> None:
    """End every stream running on `container` at its next chunk (a new request has come)."""
    for flag in _running.get(container, ()):
        flag.set()


async def interruptible(container: Any, parts: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`parts` until a later request interrupts them: then `data: [DONE]`, with no finish_reason."""
    flag = asyncio.Event()
    running = _running.setdefault(container, set())
    running.add(flag)
    try:
        async for part in parts:
            if flag.is_set():
                yield sse("[DONE]")
                return
            yield part
    finally:
        running.discard(flag)
