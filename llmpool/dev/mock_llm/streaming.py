"""When tokens are due, and the SSE lines of a streamed answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from llmpool.dev.mock_llm.replies import ChatRequest, Reply, chunk, sse

__all__ = ["Timing", "stream_body"]


class Timing:
    """When each token is due: the first after ttft, then one every 1/tokens_per_second."""

    def __init__(self, ttft: float, tokens_per_second: float, *, released: asyncio.Event | None = None) -> None:
        self.start = time.monotonic()
        self.ttft = ttft
        self.gap = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self.released = released  # set by the container's release(): what is due comes now

    async def wait(self, index: int) -> None:
        """Sleep until token `index` (0 = the first) is due; absolute times keep rates exact."""
        due = self.start + self.ttft + max(index, 0) * self.gap
        delay = due - time.monotonic()
        if delay <= 0:
            return
        if self.released is None:
            await asyncio.sleep(delay)
            return
        try:
            await asyncio.wait_for(self.released.wait(), delay)
        except TimeoutError:
            return
        # Released early: token `index` is due now and the rest follow at the usual rate.
        self.start, self.released = time.monotonic() - self.ttft - max(index, 0) * self.gap, None


async def stream_body(request: ChatRequest, reply: Reply, timing: Timing) -> Any:
    """The SSE lines of a streamed answer, vLLM style, ending with `data: [DONE]`."""
    model = request.model
    await timing.wait(0)
    yield sse(chunk(reply, model, {"role": "assistant", "content": ""}))
    if reply.tool_call:
        call = reply.tool_call
        head = {"index": 0, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        yield sse(chunk(reply, model, {"tool_calls": [head]}))
        pieces = reply.argument_pieces()
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            args = {"index": 0, "function": {"arguments": piece}}
            yield sse(chunk(reply, model, {"tool_calls": [args]}, reply.finish_reason if last else None))
    for i, token in enumerate(reply.tokens):
        await timing.wait(i)
        last = i == len(reply.tokens) - 1
        usage = reply.usage(i + 1) if request.continuous_usage else None
        yield sse(chunk(reply, model, {"content": token}, reply.finish_reason if last else None,
                        usage))
    if not reply.tokens and not reply.tool_call:
        yield sse(chunk(reply, model, {}, reply.finish_reason))
    if request.include_usage:
        yield sse(chunk(reply, model, None, usage=reply.usage()))
    yield sse("[DONE]")
