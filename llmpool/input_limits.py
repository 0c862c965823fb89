"""The API's limits on what one chat job may hold, from the settings; checked before anything is stored.

ChatJob's own bounds are what a worker can carry at all; these are the operator's, lower, for
input from outside (AGENT_API_MAX_*). Each refusal is InvalidJob (422) naming the field, its size,
the limit and the variable that sets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmpool.errors import InvalidJob
from llmpool.schemas import ChatJob
from llmpool.settings import Settings

__all__ = ["InputLimits"]


def _chars(content: object) -> int:
    """Characters of a message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part.get("text") or "") for part in content
                   if isinstance(part, dict) and isinstance(part.get("text"), str))
    return 0


@dataclass(frozen=True)
class InputLimits:
    max_message_chars: int
    max_messages: int
    max_thread_id: int
    max_tokens: int
    max_tools: int

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        return cls(max_message_chars=settings.agent_api_max_message_chars,
                   max_messages=settings.agent_api_max_messages, max_thread_id=settings.agent_api_max_thread_id,
                   max_tokens=settings.agent_api_max_tokens, max_tools=settings.agent_api_max_tools)

    def problems(self, job: ChatJob) -> list[str]:
        """Every limit the job passes, one line each (empty when it keeps to all of them)."""
        found = []
        if len(job.messages) > self.max_messages:
            found.append(f"messages: {len(job.messages)} messages, at most {self.max_messages} "
                         "(AGENT_API_MAX_MESSAGES)")
        for index, message in enumerate(job.messages):
            if (size := _chars(message.content)) > self.max_message_chars:
                found.append(f"messages[{index}].content: {size} characters, at most {self.max_message_chars} "
                             "(AGENT_API_MAX_MESSAGE_CHARS)")
        if job.thread_id is not None and len(job.thread_id) > self.max_thread_id:
            found.append(f"thread_id: {len(job.thread_id)} characters, at most {self.max_thread_id} "
                         "(AGENT_API_MAX_THREAD_ID)")
        if job.max_tokens is not None and job.max_tokens > self.max_tokens:
            found.append(f"max_tokens: {job.max_tokens}, at most {self.max_tokens} (AGENT_API_MAX_TOKENS)")
        if isinstance(job.tools, list) and len(job.tools) > self.max_tools:
            found.append(f"tools: {len(job.tools)} tools, at most {self.max_tools} (AGENT_API_MAX_TOOLS)")
        return found

    def check(self, job: ChatJob) -> None:
        """InvalidJob naming every limit the job passes; nothing when it keeps to all."""
        if found := self.problems(job):
            raise InvalidJob("Request over the API's limits: " + "; ".join(found))
