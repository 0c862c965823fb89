"""The chat job and its result: what crosses the queue, validated on both ends."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmpool.errors import InvalidJob
from llmpool.message_rules import check_message, check_order

__all__ = ["Message", "ChatJob", "Usage", "Timings", "ChatResult", "Priority", "parse_job",
           "QUEUES", "CHAT_QUEUES", "queue_for"]

Priority = Literal["high", "default", "low"]
CHAT_QUEUES = {"high": "chat.high", "default": "chat.default", "low": "chat.low"}
# Consumption order matters: kombu's "priority" cycle reads queues in the order given to -Q.
# Control first: the sweep, discovery and health must never wait behind a chat backlog.
QUEUES = ("control", "chat.high", "chat.default", "chat.low")

MAX_TEXT = 1_000_000
ThreadId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@/-]+$")]


class Message(BaseModel):
    """One OpenAI-format chat message; content may be text or a list of content parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ValueError(f"content longer than {MAX_TEXT} characters")
        return value

    @model_validator(mode="after")
    def _openai_shape(self) -> Message:
        check_message(self.role, self.content, self.tool_calls, self.tool_call_id)  # llmpool.message_rules
        return self


class ChatJob(BaseModel):
    """A chat job as submitted: OpenAI-format messages plus llmpool's routing fields."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1, max_length=10_000)
    model: str | None = Field(default=None, max_length=300)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    # The client's own tools (passed through untouched), or the worker's built-in tools (llmpool.tool_loop):
    # "builtin" asks for them, "auto" takes them when one is configured and an endpoint can call tools.
    tools: list[dict[str, Any]] | Literal["builtin", "auto"] | None = Field(default=None, max_length=128)
    # OpenAI sampling and output fields, passed to the endpoint as given (None: the endpoint's default).
    tool_choice: str | dict[str, Any] | None = None
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # what vLLM and OpenAI take
    response_format: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)
    thread_id: ThreadId | None = None
    priority: Priority = "default"
    deadline: float | None = Field(default=None, gt=0, description="unix time, seconds")
    stream: bool = Field(default=False, description="publish tokens to the job's Redis stream")
    remember: bool = Field(default=False, description="append this turn to the thread's memory")
    # The API's authenticated caller (its token's `sub`): the job and the thread's memory are theirs.
    owner: str | None = Field(default=None, min_length=1, max_length=1024)

    @field_validator("tools")
    @classmethod
    def _tools_have_names(cls, tools: list[dict[str, Any]] | str | None) -> Any:
        for tool in tools if isinstance(tools, list) else []:
            function = tool.get("function")
            if tool.get("type") != "function" or not isinstance(function, dict) or not isinstance(
                function.get("name"), str
            ):
                raise ValueError('each tool must be {"type": "function", "function": {"name": ...}}')
        return tools

    @field_validator("messages")
    @classmethod
    def _tool_replies_follow_calls(cls, messages: list[Message]) -> list[Message]:
        check_order([(m.role, bool(m.tool_calls)) for m in messages])
        return messages

    @field_validator("stop")
    @classmethod
    def _stop_bounded(cls, stop: str | list[str] | None) -> Any:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

    def summary(self) -> str:
        """A one-line description with no message text, for Flower and logs."""
        parts = [f"{len(self.messages)} messages", f"priority={self.priority}"]
        if self.model:
            parts.append(f"model={self.model}")
        if self.thread_id:
            parts.append(f"thread={self.thread_id}")
        if isinstance(self.tools, list) and self.tools:
            parts.append(f"tools={len(self.tools)}")
        elif self.tools == "builtin":  # not "auto": /poll_requests' default says nothing about the job
            parts.append("tools=builtin")
        return f"<chat job: {', '.join(parts)}>"


class Usage(BaseModel):
    """Token counts; `estimated` when some figure is llmpool's, the server's missing or short (llmpool.usage)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False


class Timings(BaseModel):
    """Seconds: queued (submit to start), ttft (call start to first token), total (the call)."""

    queued: float | None = None
    ttft: float | None = None
    total: float = 0.0
    tpot: float | None = None


class ChatResult(BaseModel):
    content: str
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    model: str
    endpoint: str
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    attempts: int = 1
    steps: list[dict[str, Any]] = Field(default_factory=list)  # the built-in tools the job ran (llmpool.tool_loop)


def parse_job(data: Any) -> ChatJob:
    """Validate a job from outside; raises InvalidJob naming every bad field."""
    try:
        return ChatJob.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'job'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise InvalidJob(f"invalid chat job: {problems}") from None


def queue_for(priority: Priority) -> str:
    return CHAT_QUEUES[priority]
