"""Request bodies of the shim, validated before anything is enqueued."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from llmpool.schemas import MAX_TEXT, ChatJob, Priority, ThreadId

__all__ = ["PollRequest"]


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

    def to_job(self, *, stream: bool, now: float) -> ChatJob:
        return ChatJob(
            messages=[{"role": "user", "content": self.message}],  # type: ignore[list-item]
            model=self.model, max_tokens=self.max_tokens, temperature=self.temperature,
            thread_id=self.thread_id, priority=self.priority, stream=stream,
            remember=self.thread_id is not None,
            deadline=now + self.timeout if self.timeout else None,
        )
