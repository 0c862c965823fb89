"""Assembling a chat completion from OpenAI-format JSON or SSE chunks, validating as it goes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmpool.errors import InvalidResponse

__all__ = ["Completion", "sse_payload", "parse_chunk", "parse_completion"]


@dataclass
class Completion:
    """What one call produced so far; filled chunk by chunk when streaming."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    pieces: int = 0  # content/tool deltas received: > 0 means the consumer saw output

    def add_delta(self, delta: dict[str, Any]) -> str:
        """Fold one `choices[0].delta` in; returns the new text, if any."""
        text = delta.get("content") or ""
        if not isinstance(text, str):
            raise InvalidResponse("delta.content is not a string")
        self.content += text
        for call in delta.get("tool_calls") or []:
            self._merge_tool_call(call)
        if text or delta.get("tool_calls"):
            self.pieces += 1
        return text

    def _merge_tool_call(self, call: dict[str, Any]) -> None:
        if not isinstance(call, dict):
            raise InvalidResponse("tool_calls entry is not an object")
        index = call.get("index", len(self.tool_calls))
        while len(self.tool_calls) <= index:
            self.tool_calls.append(
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
        slot = self.tool_calls[index]
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {k: int(raw[k]) for k in keys if isinstance(raw.get(k), int | float)}


def sse_payload(line: str) -> str | None:
    """The data of one SSE line, or None for comments, blank lines and other fields."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _load(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise InvalidResponse(f"LLM sent invalid JSON: {text[:200]!r}") from None
    if not isinstance(data, dict):
        raise InvalidResponse("LLM sent JSON that is not an object")
    if "error" in data and not data.get("choices"):
        raise InvalidResponse(f"LLM sent an error inside the stream: {str(data['error'])[:300]}")
    return data


def parse_chunk(completion: Completion, payload: str) -> str:
    """Fold one SSE `data:` payload (not [DONE]) into `completion`; returns new text."""
    data = _load(payload)
    completion.model = data.get("model") or completion.model
    if data.get("usage"):
        completion.usage = _usage(data["usage"])
    choices = data.get("choices") or []
    if not isinstance(choices, list):
        raise InvalidResponse("choices is not a list")
    if not choices:
        return ""
    choice = choices[0]
    if not isinstance(choice, dict):
        raise InvalidResponse("choice is not an object")
    completion.finish_reason = choice.get("finish_reason") or completion.finish_reason
    if "delta" in choice:
        return completion.add_delta(choice.get("delta") or {})
    # Completions-style servers stream `choices[0].text` instead of a delta.
    return completion.add_delta({"content": choice.get("text") or ""})


def parse_completion(text: str) -> Completion:
    """A non-streaming chat.completion body."""
    data = _load(text)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InvalidResponse("LLM answer has no choices")
    message = choices[0].get("message") or {}
    completion = Completion(model=data.get("model"), usage=_usage(data.get("usage")))
    completion.finish_reason = choices[0].get("finish_reason")
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        raise InvalidResponse("message.content is not a string")
    completion.content = content or ""
    completion.tool_calls = list(message.get("tool_calls") or [])
    completion.pieces = 1 if completion.content or completion.tool_calls else 0
    return completion
