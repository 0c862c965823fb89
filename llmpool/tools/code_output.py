"""What one run of code produced, wherever it ran (E2B or the local runner), and how the LLM reads it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["CodeError", "CodeOutput", "render", "summarize", "TRACEBACK_TAIL_LINES"]

# Jupyter (E2B) colours its tracebacks with ANSI escapes: noise to an LLM.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TRACEBACK_TAIL_LINES = 8  # the end of a traceback says what went wrong; its start is the runner's own frames


@dataclass(frozen=True)
class CodeError:
    """An exception the code raised: its class name, its message and its traceback."""

    name: str
    value: str
    traceback: str


@dataclass
class CodeOutput:
    """stdout, stderr, results (the last expression's value, displays) and the code's error, if any."""

    stdout: str = ""
    stderr: str = ""
    results: list[str] = field(default_factory=list)
    error: CodeError | None = None
    stopped: str | None = None  # why the run was cut short: "timeout", "cpu_limit", "memory_limit", ...
    dropped: int = 0  # bytes of output read but not kept (past the cap while reading)


def _tail(text: str, lines: int) -> str:
    return "\n".join(ANSI_ESCAPE.sub("", text).rstrip("\n").splitlines()[-lines:])


def render(output: CodeOutput) -> str:
    """The tool message the LLM reads: only the sections that have something in them."""
    parts = []
    if output.stdout:
        parts.append(f"stdout:\n{output.stdout.rstrip()}")
    if output.stderr:
        parts.append(f"stderr:\n{output.stderr.rstrip()}")
    for result in output.results:
        parts.append(f"result:\n{result}")
    if output.error is not None:
        parts.append(f"error: {output.error.name}: {output.error.value}")
        if output.error.traceback:
            parts.append(f"traceback (last lines):\n{_tail(output.error.traceback, TRACEBACK_TAIL_LINES)}")
    if output.dropped:
        parts.append(f"[{output.dropped} more bytes of output were not kept]")
    if output.stopped is not None:
        parts.append(f"stopped: {output.stopped}")
    return "\n".join(parts) if parts else "(no output)"


def summarize(output: CodeOutput) -> str:
    """One line for the <think> block and the job history."""
    if output.stopped is not None:
        head = f"stopped ({output.stopped})"
    elif output.error is not None:
        head = f"{output.error.name}: {output.error.value}"
    else:
        head = "ok"
    seen = [f"{name} {len(text.encode())} bytes" for name, text in (("stdout", output.stdout),
                                                                       ("stderr", output.stderr)) if text]
    if output.results:
        seen.append(f"result {output.results[-1]}")
    return head + (": " + ", ".join(seen) if seen else "")
