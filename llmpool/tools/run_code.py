"""run_code: the tool's schema and argument checks, shared by its two runners (E2B and local)."""

from __future__ import annotations

from typing import Any

from llmpool.tools import ToolResult
from llmpool.tools.results import failed, time_left

__all__ = ["MAX_CODE_CHARS", "schema", "code_argument", "checked_run"]

MAX_CODE_CHARS = 100_000


def schema(where: str) -> dict[str, Any]:
    """The OpenAI tool; `where` tells the model what the code can reach."""
    return {"type": "function", "function": {
        "name": "run_code",
        "description": f"Run Python code {where} and return its stdout, stderr, the value of its last "
                       "expression and any error. Use print() to show results.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run",
                                    "minLength": 1, "maxLength": MAX_CODE_CHARS}},
            "required": ["code"],
        },
    }}


def code_argument(arguments: Any) -> str | None:
    """The `code` to run, or None when the arguments do not hold a usable one."""
    code = arguments.get("code") if isinstance(arguments, dict) else None
    if not isinstance(code, str) or not code.strip() or len(code) > MAX_CODE_CHARS:
        return None
    return code


def checked_run(arguments: Any, *, timeout: float, deadline: float, started: float,
                max_bytes: int) -> tuple[str, float] | ToolResult:
    """The code to run and the seconds it may take, or the failure both runners answer with instead."""
    code = code_argument(arguments)
    if code is None:
        return failed("bad_arguments", f"`code` must be a non-empty string of at most {MAX_CODE_CHARS} "
                      "characters", started=started, max_bytes=max_bytes)
    left = time_left(timeout, deadline)
    if left <= 0:
        return failed("timeout", "no time left before the job's deadline", started=started, max_bytes=max_bytes)
    return code, left
