"""The built-in tools' steps as the TT-Studio agent showed them in its text stream: a <think> block.

Each step (a `step` event of the job's stream, llmpool.tool_loop) is one line naming the tool and
its (truncated) arguments, then one line with its short result or its error. The block opens at
the first step and closes before the next text: a loop whose LLM says nothing between rounds
shows one block, then the answer. Step events survive a restart of the job (they are written
with its checkpoints), so after a [RESET] the block is shown again with every step so far.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ThinkBlock", "step_lines"]

OPEN, CLOSE = "<think>\n", "</think>\n\n"


def step_lines(step: dict[str, Any]) -> str:
    """One step as text: `Using tool: NAME ARGS` and its result (or error) on the next line."""
    head = f"Using tool: {step.get('tool', '?')} {step.get('arguments', '')}".rstrip()
    error = step.get("error")
    summary = str(step.get("summary") or "")
    seconds = step.get("duration")
    took = f" ({seconds:.1f}s)" if isinstance(seconds, (int, float)) else ""
    tail = f"Tool error ({error}): {summary}" if error else f"Result{took}: {summary}"
    return f"{head}\n{tail}\n"


class ThinkBlock:
    """The text a stream adds for steps: call `step` per step, `close` before other text, `again` after a reset."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.open = False

    def step(self, data: dict[str, Any]) -> str:
        line = step_lines(data)
        self.lines.append(line)
        prefix = "" if self.open else OPEN
        self.open = True
        return prefix + line

    def close(self) -> str:
        if not self.open:
            return ""
        self.open = False
        return CLOSE

    def again(self) -> str:
        """After a reset: the steps so far, in an open block (the next text closes it)."""
        self.open = bool(self.lines)
        return OPEN + "".join(self.lines) if self.lines else ""
