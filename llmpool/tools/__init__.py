"""The worker's built-in tools (issue 14): what the tool loop calls, and which tools a deployment offers.

The interface between the tools (this package) and the tool loop (llmpool.tool_loop):

- A `Tool` has a `name`, a `timeout`, an OpenAI tool `schema()` and `run(arguments, deadline=...)`.
- `run` never raises for a tool failure (bad arguments, timeout, HTTP error, sandbox error): the
  failure goes back to the LLM as the tool's result, so it is a `ToolResult` with `error` set.
- `builtin_tools(settings)` offers only the tools that are configured: `web_search` with
  TAVILY_API_KEY, `run_code` with E2B_API_KEY or AGENT_LOCAL_CODE_EXECUTION=true.
"""

from __future__ import annotations

import threading
import weakref
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


# Built once per settings object (a worker asks per job): each tool holds a pooled HTTP client.
_built: dict[int, tuple[weakref.ref[Settings], dict[str, Tool]]] = {}
_built_lock = threading.Lock()


def builtin_tools(settings: Settings) -> dict[str, Tool]:
    """The configured built-in tools by name; a tool whose key is missing is not offered.

    run_code runs in E2B when E2B_API_KEY is set (a real sandbox wins over the host), else locally
    when AGENT_LOCAL_CODE_EXECUTION=true, else it is not offered.
    """
    with _built_lock:
        entry = _built.get(id(settings))
        if entry is None or entry[0]() is not settings:
            for key in [key for key, (ref, _) in _built.items() if ref() is None]:
                del _built[key]  # settings objects gone (tests build many)
            entry = (weakref.ref(settings), _build(settings))
            _built[id(settings)] = entry
        return dict(entry[1])


def _build(settings: Settings) -> dict[str, Tool]:
    # Imported here: the tools pull in httpx clients, and this module is the loop's light interface.
    from llmpool.tools.e2b import E2BRunCode
    from llmpool.tools.local_code import LocalRunCode
    from llmpool.tools.local_runner import LocalLimits
    from llmpool.tools.web_search import WebSearch

    tools: dict[str, Tool] = {}
    cap = settings.agent_tool_max_result_bytes
    if settings.tavily_api_key is not None:
        tools["web_search"] = WebSearch(
            api_key=settings.tavily_api_key.get_secret_value(), base_url=settings.agent_tavily_url,
            timeout=settings.agent_web_search_timeout or settings.agent_tool_timeout,
            max_results=settings.agent_web_search_max_results, max_result_bytes=cap)
    code_timeout = settings.agent_run_code_timeout or settings.agent_tool_timeout
    if settings.e2b_api_key is not None:
        tools["run_code"] = E2BRunCode(
            api_key=settings.e2b_api_key.get_secret_value(), domain=settings.e2b_domain,
            api_url=settings.e2b_api_url, sandbox_url=settings.e2b_sandbox_url,
            template=settings.agent_e2b_template, timeout=code_timeout, max_result_bytes=cap)
    elif settings.agent_local_code_execution:
        limits = LocalLimits(
            cpu_seconds=settings.agent_local_code_cpu_seconds,
            memory_bytes=settings.agent_local_code_memory_mb * 2**20,
            file_bytes=settings.agent_local_code_file_mb * 2**20,
            max_processes=settings.agent_local_code_max_processes,
            max_open_files=settings.agent_local_code_max_open_files,
            user=settings.agent_local_code_user)
        tools["run_code"] = LocalRunCode(limits=limits, timeout=code_timeout, max_result_bytes=cap)
    return tools
