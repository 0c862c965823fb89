"""Assembling a chat completion from OpenAI-format JSON or SSE chunks, validating as it goes."""

from __future__ import annotations

import json
from typing import Any

from llmpool.errors import InvalidResponse

__all__ = ["Completion", "sse_payload", "parse_chunk", "parse_completion", "MAX_TOOL_CALLS"]

MAX_TOOL_CALLS = 128  # tool calls in one answer; an index past this is garbage, not a plan


class _ToolCallParts:
    """One streamed tool call: its id, and its name and arguments as the pieces that came."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: list[str] = []
        self.arguments: list[str] = []

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": "".join(self.name), "arguments": "".join(self.arguments)}}


class Completion:
    """What one call produced so far; filled chunk by chunk when streaming.

    Text and tool-call arguments are kept as the pieces that came and joined when read, so a long
    stream costs time linear in its length (`s += piece` copies the whole answer every token).
    """

    def __init__(self, content: str = "", tool_calls: list[dict[str, Any]] | None = None, *,
                 model: str | None = None, finish_reason: str | None = None,
                 usage: dict[str, int] | None = None, pieces: int = 0) -> None:
        self._content: list[str] = [content] if content else []
        self._tool_parts: list[_ToolCallParts] = []
        self._tool_calls: list[dict[str, Any]] = list(tool_calls or [])
        self.model = model
        self.finish_reason = finish_reason
        self.usage: dict[str, int] = dict(usage or {})
        self.usage_estimated = False  # some figure of `usage` is ours, not the server's (llmpool.usage)
        self.pieces = pieces  # content/tool deltas received: > 0 means the consumer saw output

    @property
    def content(self) -> str:
        """The text so far (joined once per read, and kept joined)."""
        if len(self._content) > 1:
            self._content = ["".join(self._content)]
        return self._content[0] if self._content else ""

    @content.setter
    def content(self, value: str) -> None:
        self._content = [value] if value else []

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls: those of a whole answer, or those assembled from stream deltas."""
        return self._tool_calls + [parts.as_dict() for parts in self._tool_parts]

    @tool_calls.setter
    def tool_calls(self, value: list[dict[str, Any]]) -> None:
        self._tool_calls = list(value)
        self._tool_parts = []

    def check_tool_calls(self) -> None:
        """InvalidResponse when a tool call has no function name: nothing could run it, or be told its result."""
        for index, call in enumerate(self.tool_calls):
            if not call["function"]["name"]:
                raise InvalidResponse(f"tool call {index} has no function name")

    def __repr__(self) -> str:
        return (f"Completion(content={self.content!r}, tool_calls={self.tool_calls!r}, model={self.model!r}, "
                f"finish_reason={self.finish_reason!r}, usage={self.usage!r}, pieces={self.pieces})")

    def add_delta(self, delta: dict[str, Any]) -> str:
        """Fold one `choices[0].delta` in; returns the new text, if any."""
        if not isinstance(delta, dict):
            raise InvalidResponse("delta is not an object")
        text = delta.get("content") or ""
        if not isinstance(text, str):
            raise InvalidResponse("delta.content is not a string")
        if text:
            self._content.append(text)
        calls = delta.get("tool_calls") or []
        if not isinstance(calls, list):
            raise InvalidResponse("delta.tool_calls is not a list")
        for call in calls:
            self._merge_tool_call(call)
        if text or calls:
            self.pieces += 1
        return text

    def _merge_tool_call(self, call: dict[str, Any]) -> None:
        if not isinstance(call, dict):
            raise InvalidResponse("tool_calls entry is not an object")
        index = call.get("index", len(self._tool_parts))
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < MAX_TOOL_CALLS:
            # Slots up to the index are made, so a huge index must not be taken at its word.
            raise InvalidResponse(f"tool_calls index {index!r} is not in 0..{MAX_TOOL_CALLS - 1}")
        while len(self._tool_parts) <= index:
            self._tool_parts.append(_ToolCallParts())
        slot = self._tool_parts[index]
        if call.get("id"):
            slot.id = call["id"]
        function = call.get("function") or {}
        if not isinstance(function, dict):
            raise InvalidResponse("tool_calls function is not an object")
        for field_name, parts in (("name", slot.name), ("arguments", slot.arguments)):
            piece = function.get(field_name) or ""
            if not isinstance(piece, str):
                raise InvalidResponse(f"tool_calls function.{field_name} is not a string")
            if piece:
                parts.append(piece)


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


def _whole_tool_call(call: Any) -> dict[str, Any]:
    """One tool call of a whole answer in OpenAI's shape; arguments sent as an object become JSON text."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidResponse("a tool call has no function with a name")
    arguments = function.get("arguments") or ""
    if isinstance(arguments, dict):  # Ollama's own API sends an object; OpenAI's shape is text
        arguments = json.dumps(arguments)
    if not isinstance(arguments, str):
        raise InvalidResponse("a tool call's arguments are neither text nor an object")
    call_id = call.get("id")
    return {"id": call_id if isinstance(call_id, str) else None, "type": "function",
            "function": {"name": function["name"], "arguments": arguments}}


def parse_completion(text: str) -> Completion:
    """A non-streaming chat.completion body."""
    data = _load(text)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InvalidResponse("LLM answer has no choices")
    message = choices[0].get("message") or {}
    if not isinstance(message, dict):
        raise InvalidResponse("message is not an object")
    completion = Completion(model=data.get("model"), usage=_usage(data.get("usage")))
    completion.finish_reason = choices[0].get("finish_reason")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise InvalidResponse("message.content is not a string")
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise InvalidResponse("message.tool_calls is not a list")
    completion.content = content or ""
    completion.tool_calls = [_whole_tool_call(call) for call in tool_calls]
    completion.pieces = 1 if completion.content or completion.tool_calls else 0
    return completion
