"""Deterministic chat replies and the OpenAI/vLLM JSON shapes that carry them."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ChatRequest", "InvalidRequest", "Reply", "chunk", "completion", "context_length_message",
    "error_body", "parse_chat_request", "plan_reply", "sse", "tokenize",
]

CONTEXT_LENGTH = 4096


class InvalidRequest(ValueError):
    """The chat request body is malformed (answered with 400)."""


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat completion request the mock acts on."""

    body: dict[str, Any]
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    continuous_usage: bool
    max_tokens: int | None
    tools: list[dict[str, Any]]


ARGUMENT_PIECE = 8  # characters of a tool call's arguments per streamed delta


@dataclass(frozen=True)
class Reply:
    """What the mock will answer: text tokens, or one tool call."""

    id: str
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int
    tool_call: dict[str, Any] | None = None

    @property
    def completion_tokens(self) -> int:
        # A tool call goes out as its name, then its arguments in pieces: count those chunks.
        return 1 + len(self.argument_pieces()) if self.tool_call else len(self.tokens)

    def argument_pieces(self) -> list[str]:
        """The tool call's arguments in the pieces a stream sends them in, as vLLM splits them."""
        arguments = str((self.tool_call or {}).get("function", {}).get("arguments", ""))
        return [arguments[i:i + ARGUMENT_PIECE] for i in range(0, len(arguments), ARGUMENT_PIECE)] or [""]

    def usage(self, emitted: int | None = None) -> dict[str, int]:
        """OpenAI `usage`, for the whole reply or for the first `emitted` tokens."""
        done = self.completion_tokens if emitted is None else emitted
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done,
                "total_tokens": self.prompt_tokens + done}


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Validate a /v1/chat/completions body like vLLM would, raising InvalidRequest."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a string 'role'")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise InvalidRequest("'max_tokens' must be a positive integer")
    stream_options = body.get("stream_options") or {}
    tools = body.get("tools") or []
    if not isinstance(stream_options, dict) or not isinstance(tools, list):
        raise InvalidRequest("'stream_options' must be an object and 'tools' a list")
    return ChatRequest(
        body=body, model=str(body.get("model") or ""), messages=messages,
        stream=body.get("stream") is True, max_tokens=max_tokens, tools=tools,
        include_usage=stream_options.get("include_usage") is True,
        continuous_usage=stream_options.get("continuous_usage_stats") is True,
    )


def message_text(message: dict[str, Any]) -> str:
    """The text of one message: a string content, or its text parts joined by spaces."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def tokenize(text: str) -> list[str]:
    """Split text into word tokens that carry their leading spaces; joined they give `text`."""
    tokens = re.findall(r"\s*\S+", text)
    tail = text[len("".join(tokens)):]
    if tail:
        tokens = [*tokens[:-1], tokens[-1] + tail] if tokens else [tail]
    return tokens


def plan_reply(request: ChatRequest, *, container: str, reply: str | None,
               tool_script: dict[str, Any] | None = None) -> Reply:
    """The reply a container gives to `request`, the same every time for the same input."""
    last_user = next(
        (message_text(m) for m in reversed(request.messages) if m.get("role") == "user"), "",
    )
    prompt_tokens = sum(len(message_text(m).split()) for m in request.messages)
    digest = hashlib.sha256(json.dumps(request.messages, sort_keys=True).encode()).hexdigest()
    reply_id = f"chatcmpl-{digest[:24]}"
    if tool_script is not None:
        scripted = tool_reply(request, tool_script, reply_id=reply_id, prompt_tokens=prompt_tokens)
        if scripted is not None:
            return scripted
    tool = _first_tool_name(request.tools)
    if tool and re.search(r"\btool\b", last_user, re.IGNORECASE):
        call = {"id": f"call_{digest[:24]}", "type": "function",
                "function": {"name": tool, "arguments": json.dumps({"request": last_user})}}
        return Reply(reply_id, [], "tool_calls", prompt_tokens, call)
    text = reply if reply is not None else f"Hello from {container}! You said: {last_user}"
    tokens = tokenize(text)
    cap = request.max_tokens
    if cap is not None and len(tokens) > cap:
        return Reply(reply_id, tokens[:cap], "length", prompt_tokens)
    return Reply(reply_id, tokens, "stop", prompt_tokens)


def tool_reply(request: ChatRequest, script: dict[str, Any], *, reply_id: str, prompt_tokens: int) -> Reply | None:
    """A container scripted to use a tool (knob `tool_script`), when the request offers that tool.

    It calls the tool with the script's arguments until the conversation holds `calls` tool results;
    then it answers "The tool said: " and the last result's first words, so a test sees the result
    reached the LLM. `tool_choice: "none"` is obeyed, unless `always` (a model that never stops calling).
    None: the request does not offer the tool, and the container answers as usual.
    """
    names = {t.get("function", {}).get("name") for t in request.tools if isinstance(t, dict)
             and isinstance(t.get("function"), dict)}
    if script["tool"] not in names:
        return None
    last = request.messages[-1]
    calls_made = sum(1 for m in request.messages if m.get("role") == "tool")
    wants_call = script["always"] or (calls_made < script.get("calls", 1) and request.body.get("tool_choice") != "none")
    if wants_call:
        call = {"id": f"call_{reply_id[-12:]}_{calls_made}", "type": "function",
                "function": {"name": script["tool"], "arguments": json.dumps(script["arguments"])}}
        return Reply(reply_id, [], "tool_calls", prompt_tokens, call)
    said = " ".join(message_text(last).split()[:8]) if last.get("role") == "tool" else "nothing"
    return Reply(reply_id, tokenize(f"The tool said: {said}"), "stop", prompt_tokens)


def _first_tool_name(tools: list[Any]) -> str | None:
    """The function name of the first tool, if it has one."""
    if not tools or not isinstance(tools[0], dict):
        return None
    function = tools[0].get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) and name else None


def completion(reply: Reply, model: str) -> dict[str, Any]:
    """A non-streaming `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.tokens)}
    if reply.tool_call:
        message = {"role": "assistant", "content": None, "tool_calls": [reply.tool_call]}
    return {
        "id": reply.id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": reply.finish_reason}],
        "usage": reply.usage(),
    }


def chunk(reply: Reply, model: str, delta: dict[str, Any] | None,
          finish_reason: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk`; delta None makes the usage-only chunk (`choices: []`)."""
    out: dict[str, Any] = {
        "id": reply.id, "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model, "choices": [],
    }
    if delta is not None:
        out["choices"] = [{"index": 0, "delta": delta, "logprobs": None,
                           "finish_reason": finish_reason}]
    if usage is not None:
        out["usage"] = usage
    return out


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event line pair, `data: ...` then a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def error_body(message: str, kind: str, code: int) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def context_length_message(request: ChatRequest | None) -> str:
    """vLLM's 400 text for a prompt that does not fit the context window."""
    prompt = sum(len(message_text(m).split()) for m in request.messages) if request else 0
    wanted = (request.max_tokens if request else None) or CONTEXT_LENGTH
    return (
        f"This model's maximum context length is {CONTEXT_LENGTH} tokens. However, you requested "
        f"{prompt + wanted} tokens ({prompt} in the messages, {wanted} in the completion). "
        "Please reduce the length of the messages or completion."
    )
