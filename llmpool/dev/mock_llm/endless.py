"""Faults of answers that never end or never fit: trickle, endless_stream, huge_body, huge_line.

Each imitates a real server gone wrong, in vLLM's wire format (`data: {...}\\n\\n` chunks):

- trickle: the normal answer, one byte every `trickle_interval` seconds (0.3 by default), so no
  single read ever waits long enough for a per-read timeout to fire;
- endless_stream: token chunks at `tokens_per_second`, each followed by an SSE `: keepalive`
  comment, and never a finish_reason or `[DONE]` (non-streaming: a JSON body that never closes);
- huge_body: a 200 of about `huge_bytes` bytes, sent as fast as the client reads (many ordinary
  token chunks when streaming, one giant `content` otherwise);
- huge_line: one `data:` line of `huge_bytes` bytes that never reaches its line end.

Every one stops when the client leaves, the container stops, or `hang_cap` seconds pass.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.responses import Response, StreamingResponse

from llmpool.dev.mock_llm.replies import ChatRequest, Reply, chunk, completion, sse

if TYPE_CHECKING:
    from llmpool.dev.mock_llm.container import Container

__all__ = ["ENDLESS_FAULTS", "endless_fault"]

ENDLESS_FAULTS = frozenset({"trickle", "endless_stream", "huge_body", "huge_line"})
PIECE = 64 * 1024  # bytes per write of the huge answers
KEEPALIVE = b": keepalive\n\n"


def endless_fault(fault: str, container: Container, chat: ChatRequest, reply: Reply) -> Response:
    """The streaming answer `fault` (one of ENDLESS_FAULTS) gives to a chat completion."""
    media = "text/event-stream" if chat.stream else "application/json"
    if fault == "trickle":
        body = _trickle(container, _whole_answer(chat, reply))
    elif fault == "endless_stream":
        body = _endless_sse(container, chat, reply) if chat.stream else _endless_json(container, reply)
    elif fault == "huge_line" and chat.stream:
        body = _huge_line(container, chat, reply)
    else:
        body = _huge_sse(container, chat, reply) if chat.stream else _huge_json(container, chat, reply)
    return StreamingResponse(body, media_type=media)


def _whole_answer(chat: ChatRequest, reply: Reply) -> bytes:
    """The answer a healthy container gives, as bytes: the SSE chunks, or the JSON body."""
    model = chat.model
    if not chat.stream:
        return json.dumps(completion(reply, model)).encode()
    parts = [sse(chunk(reply, model, {"role": "assistant", "content": ""}))]
    for i, token in enumerate(reply.tokens):
        last = i == len(reply.tokens) - 1
        parts.append(sse(chunk(reply, model, {"content": token}, reply.finish_reason if last else None)))
    if not reply.tokens:
        parts.append(sse(chunk(reply, model, {}, reply.finish_reason)))
    return b"".join([*parts, sse("[DONE]")])


class _Until:
    """Whether an endless answer must stop: its container is closing, or hang_cap has passed."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.until = time.monotonic() + container.knobs.hang_cap

    def over(self) -> bool:
        return self.container.closing.is_set() or time.monotonic() > self.until

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _trickle(container: Container, body: bytes) -> AsyncIterator[bytes]:
    clock, interval = _Until(container), container.knobs.trickle_interval
    for i in range(len(body)):
        if clock.over():
            return
        yield body[i:i + 1]
        await clock.pause(interval)


async def _endless_sse(container: Container, chat: ChatRequest, reply: Reply) -> AsyncIterator[bytes]:
    clock, knobs = _Until(container), container.knobs
    gap = 1.0 / knobs.tokens_per_second if knobs.tokens_per_second > 0 else 0.05
    tokens = reply.tokens or ["tick"]
    await clock.pause(knobs.ttft)
    yield sse(chunk(reply, chat.model, {"role": "assistant", "content": ""}))
    i = 0
    while not clock.over():
        yield sse(chunk(reply, chat.model, {"content": tokens[i % len(tokens)]})) + KEEPALIVE
        i += 1
        await clock.pause(gap)


async def _endless_json(container: Container, reply: Reply) -> AsyncIterator[bytes]:
    clock = _Until(container)
    yield f'{{"id":"{reply.id}","object":"chat.completion","choices":[{{"index":0,"message":'.encode()
    while not clock.over():
        yield b" " * 64  # JSON allows any whitespace here, so the body is never known to be bad
        await clock.pause(0.05)


async def _huge_sse(container: Container, chat: ChatRequest, reply: Reply) -> AsyncIterator[bytes]:
    clock, left = _Until(container), container.knobs.huge_bytes
    yield sse(chunk(reply, chat.model, {"role": "assistant", "content": ""}))
    piece = sse(chunk(reply, chat.model, {"content": "x" * 200}))
    batch = piece * max(1, PIECE // len(piece))
    while left > 0 and not clock.over():
        yield batch
        left -= len(batch)
        await clock.pause(0)
    yield sse(chunk(reply, chat.model, {}, "length")) + sse("[DONE]")


async def _huge_json(container: Container, chat: ChatRequest, reply: Reply) -> AsyncIterator[bytes]:
    clock, left = _Until(container), container.knobs.huge_bytes
    head = {"id": reply.id, "object": "chat.completion", "model": chat.model}
    yield json.dumps(head)[:-1].encode() + b', "choices": [{"index": 0, "message": {"role": "assistant", "content": "'
    while left > 0 and not clock.over():
        yield b"x" * PIECE
        left -= PIECE
        await clock.pause(0)
    yield b'"}, "finish_reason": "length"}]}'


async def _huge_line(container: Container, chat: ChatRequest, reply: Reply) -> AsyncIterator[bytes]:
    clock, left = _Until(container), container.knobs.huge_bytes
    yield sse(chunk(reply, chat.model, {"role": "assistant", "content": ""}))
    yield b'data: {"id":"' + reply.id.encode() + b'","choices":[{"index":0,"delta":{"content":"'
    while left > 0 and not clock.over():
        yield b"x" * PIECE
        left -= PIECE
        await clock.pause(0)
    yield b'"},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
