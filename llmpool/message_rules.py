"""OpenAI's rules for chat messages, checked before any LLM sees them.

A server answers a malformed message in its own way: vLLM with a 400, llama-cpp-python's server
with a 500 and a traceback (a role it does not know, `content: null` with `tool_calls`). A 500
counts against the endpoint, so a caller's bad input could open a healthy endpoint's breaker; we
refuse the message first instead (a 4xx at submit, or the job failed as invalid in the worker).
Each rule raises ValueError saying what is wrong; pydantic turns it into the field's error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["check_message", "check_order", "PART_TYPES"]

# The content part types each role may send (OpenAI's chat schema).
PART_TYPES: dict[str, frozenset[str]] = {
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
    "tool": frozenset({"text"}),
}
# What each part type must carry, and as what.
_PART_FIELDS: dict[str, tuple[str, type]] = {
    "text": ("text", str), "refusal": ("refusal", str), "image_url": ("image_url", dict),
    "input_audio": ("input_audio", dict), "file": ("file", dict),
}


def _check_part(role: str, index: int, part: dict[str, Any]) -> None:
    kind = part.get("type")
    if kind not in PART_TYPES[role]:
        raise ValueError(f"content[{index}]: a {role} message takes parts of type "
                         f"{sorted(PART_TYPES[role])}, not {kind!r}")
    name, shape = _PART_FIELDS[str(kind)]
    if not isinstance(part.get(name), shape):
        raise ValueError(f"content[{index}]: a {kind} part needs '{name}' as a {shape.__name__}")
    if kind == "image_url" and not isinstance(part[name].get("url"), str):
        raise ValueError(f"content[{index}]: image_url needs a string 'url'")


def _check_tool_call(index: int, call: dict[str, Any]) -> None:
    where = f"tool_calls[{index}]"
    if call.get("type", "function") != "function":
        raise ValueError(f"{where}: type must be 'function'")
    if call.get("id") is not None and not isinstance(call["id"], str):
        raise ValueError(f"{where}: id must be a string")
    function = call.get("function")
    if not isinstance(function, dict):
        raise ValueError(f"{where}: needs a 'function' object")
    if not isinstance(function.get("name"), str) or not function["name"]:
        raise ValueError(f"{where}: function.name must be a non-empty string")
    if not isinstance(function.get("arguments"), str):
        raise ValueError(f"{where}: function.arguments must be a string (JSON text)")


def check_message(role: str, content: Any, tool_calls: list[dict[str, Any]] | None,
                  tool_call_id: str | None) -> None:
    """One message's shape: content where its role needs it, parts its role takes, tool fields in place."""
    if tool_calls is not None and role != "assistant":
        raise ValueError(f"only an assistant message has tool_calls, not a {role} message")
    for index, call in enumerate(tool_calls or []):
        _check_tool_call(index, call)
    if content is None and not (role == "assistant" and tool_calls):
        raise ValueError("content is required (null only in an assistant message with tool_calls)")
    if isinstance(content, list):
        if not content:
            raise ValueError("content must not be an empty list")
        for index, part in enumerate(content):
            _check_part(role, index, part)
    if role == "tool" and not tool_call_id:
        raise ValueError("a tool message needs the tool_call_id it answers")


def check_order(turns: Sequence[tuple[str, bool]]) -> None:
    """Each (role, has tool_calls): a tool message answers tool calls, so an assistant's must come before it."""
    called = False
    for index, (role, has_calls) in enumerate(turns):
        if role == "tool" and not called:
            raise ValueError(f"messages[{index}]: a tool message with no assistant tool_calls before it")
        called = called or (role == "assistant" and has_calls)
