"""Request bodies of the shim, validated before anything is enqueued."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmpool.schemas import MAX_TEXT, ChatJob, Priority, ThreadId

__all__ = ["PollRequest", "FunctionTool", "ToolChoice"]

FunctionName = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")  # OpenAI's rule for names


class FunctionSpec(BaseModel):
    """OpenAI's `function` of a tool: a name, what it does, and its JSON Schema parameters."""

    model_config = ConfigDict(extra="forbid")

    name: str = FunctionName
    description: str | None = Field(default=None, max_length=10_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(BaseModel):
    """One tool in OpenAI's shape: `{"type": "function", "function": {...}}`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = FunctionName


class NamedToolChoice(BaseModel):
    """`{"type": "function", "function": {"name": ...}}`: the model must call this tool."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class PollRequest(BaseModel):
    """The TT-Studio agent's chat body, plus optional llmpool fields."""

    # Unknown fields are ignored, as the TT-Studio agent did, so newer clients keep working.
    model_config = ConfigDict(extra="ignore")

    message: str = Field(min_length=1, max_length=MAX_TEXT)
    thread_id: ThreadId | None = None
    priority: Priority = "default"
    model: str | None = Field(default=None, max_length=300)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    timeout: float | None = Field(default=None, gt=0, le=86_400, description="seconds until the deadline")
    # The client's own tools, or "builtin" (the worker's: llmpool.tool_loop), or "none" (no built-in
    # tools for this request, where /poll_requests would offer them: AGENT_POLL_BUILTIN_TOOLS).
    tools: list[FunctionTool] | Literal["builtin", "none"] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = None

    def to_job(self, *, stream: bool, now: float) -> ChatJob:
        return ChatJob(
            messages=[{"role": "user", "content": self.message}],  # type: ignore[list-item]
            model=self.model, max_tokens=self.max_tokens, temperature=self.temperature,
            thread_id=self.thread_id, priority=self.priority, stream=stream,
            remember=self.thread_id is not None,
            deadline=now + self.timeout if self.timeout else None,
            tools=self._tools(),
            tool_choice=self._tool_choice(),
        )

    def _tools(self) -> list[dict[str, Any]] | Literal["builtin"] | None:
        if isinstance(self.tools, list):
            return [t.model_dump(exclude_none=True) for t in self.tools] or None
        return "builtin" if self.tools == "builtin" else None

    def _tool_choice(self) -> str | dict[str, Any] | None:
        if not isinstance(self.tools, list) or not self.tools or self.tool_choice is None:
            return None  # without tools there is nothing to choose from
        return self.tool_choice if isinstance(self.tool_choice, str) else self.tool_choice.model_dump()
