"""A job's answer in OpenAI's shapes: the chat completion, its stream chunks, and the model list. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Answer", "completion", "chunk", "ending_chunks", "sse", "DONE", "tool_call_deltas", "usage_of",
           "model_list", "step_delta"]

DONE = "data: [DONE]\n\n"


@dataclass(frozen=True)
class Answer:
    """What every chunk of one answer shares."""

    id: str
    created: int
    model: str


def usage_of(result: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's usage; `estimated: true` added only when llmpool counted (the server sent no usage)."""
    usage = result.get("usage") or {}
    prompt, completion_tokens = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                           "total_tokens": int(usage.get("total_tokens") or prompt + completion_tokens)}
    if usage.get("estimated"):
        out["estimated"] = True
    return out


def completion(answer: Answer, result: dict[str, Any]) -> dict[str, Any]:
    """The `chat.completion` object of a finished job."""
    tool_calls = result.get("tool_calls") or []
    message: dict[str, Any] = {"role": "assistant", "content": result.get("content") or (None if tool_calls else "")}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body = {"id": answer.id, "object": "chat.completion", "created": answer.created,
            "model": result.get("model") or answer.model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": _finish_reason(result)}],
            "usage": usage_of(result)}
    if result.get("steps"):  # the built-in tools it ran (X-LLMPool-Tools), a field OpenAI clients ignore
        body["llmpool_steps"] = result["steps"]
    return body


def _finish_reason(result: dict[str, Any]) -> str:
    reason = result.get("finish_reason")
    if result.get("tool_calls") and reason in (None, "stop"):
        return "tool_calls"
    return str(reason or "stop")


def chunk(answer: Answer, delta: dict[str, Any] | None, *, finish_reason: str | None = None,
          usage: dict[str, Any] | None = None, with_usage: bool = False) -> dict[str, Any]:
    """One `chat.completion.chunk`; `delta=None` is the usage-only chunk (no choices)."""
    body: dict[str, Any] = {"id": answer.id, "object": "chat.completion.chunk", "created": answer.created,
                            "model": answer.model, "system_fingerprint": None}
    body["choices"] = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    if with_usage:  # with include_usage every chunk carries the field, null until the last
        body["usage"] = usage
    return body


def tool_call_deltas(tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The delta that hands over every tool call at once, each with its index."""
    return {"tool_calls": [{"index": i, **call} for i, call in enumerate(tool_calls)]}


def step_delta(step: dict[str, Any], index: int) -> dict[str, Any]:
    """A built-in tool's run (llmpool.tool_loop) as a delta: the call as OpenAI's `tool_calls` (its
    own `index`, after the earlier steps'), and its result in `llmpool_tool_result`, a field OpenAI
    clients ignore. The answer's finish_reason stays "stop": the client has nothing to run."""
    call = {"index": index, "id": str(step.get("call_id") or f"step_{index}"), "type": "function",
            "function": {"name": str(step.get("tool") or ""), "arguments": str(step.get("arguments") or "")}}
    result = {"tool_call_id": call["id"], "content": step.get("summary") or "", "error": step.get("error"),
              "duration": step.get("duration"), "size": step.get("size")}
    return {"tool_calls": [call], "llmpool_tool_result": result}


def ending_chunks(answer: Answer, result: dict[str, Any], *, with_usage: bool) -> list[dict[str, Any]]:
    """What closes a streamed answer: its tool calls, the finish reason, then usage when asked."""
    chunks = []
    if result.get("tool_calls"):
        chunks.append(chunk(answer, tool_call_deltas(result["tool_calls"]), with_usage=with_usage))
    chunks.append(chunk(answer, {}, finish_reason=_finish_reason(result), with_usage=with_usage))
    if with_usage:
        chunks.append(chunk(answer, None, usage=usage_of(result), with_usage=True))
    return chunks


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def model_list(model_ids: list[str]) -> dict[str, Any]:
    """OpenAI's `GET /v1/models` list."""
    return {"object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "llmpool"} for m in model_ids]}
