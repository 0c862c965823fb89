"""The worker's built-in tools (issue 14): what the tool loop calls, and which tools a deployment offers.

The interface between the tools (this package) and the tool loop (llmpool.tool_loop):

- A `Tool` has a `name`, a `timeout`, an OpenAI tool `schema()` and `run(arguments, deadline=...)`.
- `run` never raises for a tool failure (bad arguments, timeout, HTTP error, sandbox error): the
  failure goes back to the LLM as the tool's result, so it is a `ToolResult` with `error` set.
- `builtin_tools(settings)` offers only the tools that are configured: `web_search` with
  TAVILY_API_KEY, `run_code` with E2B_API_KEY or AGENT_LOCAL_CODE_EXECUTION=true.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llmpool.settings import Settings

__all__ = ["ToolResult", "Tool", "builtin_tools", "SUMMARY_MAX_CHARS"]

SUMMARY_MAX_CHARS = 200


@dataclass(frozen=True)
class ToolResult:
    """One tool run, as the LLM and the job history see it."""

    content: str  # the tool message's content for the LLM, already capped to the tool's size cap
    error: str | None  # None on success; a short named error ("timeout", "http_error", ...) on failure
    duration: float  # seconds
    size: int  # bytes of the full result before the cap
    summary: str  # one line for the <think> block and the job history (<= 200 chars, no secrets)


class Tool(Protocol):
    """A built-in tool the worker runs itself."""

    name: str  # "web_search" | "run_code"
    timeout: float  # seconds one run may take at most

    def schema(self) -> dict[str, Any]:
        """The OpenAI tool: {"type": "function", "function": {"name", "description", "parameters"}}."""
        ...

    def run(self, arguments: dict[str, Any], *, deadline: float) -> ToolResult:
        """Run once; stop at min(now + timeout, deadline) (unix time). Never raises for a tool failure."""
        ...


def builtin_tools(settings: Settings) -> dict[str, Tool]:
    """The configured built-in tools by name; a tool whose key is missing is not offered."""
    tools: dict[str, Tool] = {}
    return tools
