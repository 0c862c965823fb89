"""The OpenAI chat-completions request body, and what llmpool cannot honour in it (a 400 naming the field)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmpool.schemas import MAX_TEXT, ChatJob, Message, Priority, parse_job

__all__ = ["StreamOptions", "ChatCompletionRequest", "unsupported_field"]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's `POST /v1/chat/completions` body; fields we cannot honour are named by `unsupported_field`."""

    # Newer OpenAI fields we do not know are ignored, as OpenAI-compatible servers (vLLM) do.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=300, description="a model name, hf_model_id, alias, or `auto`")
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # what vLLM and OpenAI take
    response_format: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)
    # Accepted only at the value that means "nothing asked": anything else is a 400.
    n: int | None = Field(default=None, ge=1, le=128)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None

    def to_job(self, *, priority: Priority, deadline: float | None) -> ChatJob:
        """The chat job this request runs as (`auto` asks for no model: the selection serves it)."""
        # parse_job: what the job checks beyond this body (each tool's function name) is an InvalidJob, a 422
        return parse_job({
            "messages": self.messages, "model": None if self.model.strip().lower() == "auto" else self.model,
            "max_tokens": self.max_completion_tokens or self.max_tokens, "temperature": self.temperature,
            "tools": self.tools or None, "tool_choice": self.tool_choice if self.tools else None,
            "top_p": self.top_p, "stop": self.stop, "seed": self.seed, "response_format": self.response_format,
            "user": self.user, "priority": priority, "deadline": deadline, "stream": self.stream,
        })


def unsupported_field(body: ChatCompletionRequest) -> tuple[str, str] | None:
    """The first field asking for what llmpool cannot do, with why; None when it can serve the body."""
    checks: list[tuple[str, bool, str]] = [
        ("n", (body.n or 1) > 1, "llmpool returns one choice per request: n must be 1"),
        ("logprobs", bool(body.logprobs), "log probabilities are not returned"),
        ("top_logprobs", bool(body.top_logprobs), "log probabilities are not returned"),
        ("logit_bias", bool(body.logit_bias), "logit_bias is not supported"),
        ("presence_penalty", bool(body.presence_penalty), "presence_penalty is not supported"),
        ("frequency_penalty", bool(body.frequency_penalty), "frequency_penalty is not supported"),
        ("modalities", any(m != "text" for m in body.modalities or []), "only text output is supported"),
        ("audio", body.audio is not None, "audio output is not supported"),
        ("prediction", body.prediction is not None, "predicted outputs are not supported"),
        ("stream_options", body.stream_options is not None and not body.stream,
         "stream_options is only allowed with stream: true"),
        ("tool_choice", body.tool_choice is not None and not body.tools, "tool_choice needs tools"),
        ("stop", isinstance(body.stop, list) and len(body.stop) > 4, "at most 4 stop sequences"),
        ("messages", any(isinstance(m.content, str) and len(m.content) > MAX_TEXT for m in body.messages),
         f"a message is longer than {MAX_TEXT} characters"),
    ]
    return next(((name, why) for name, bad, why in checks if bad), None)
