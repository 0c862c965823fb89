"""Building ToolResults: capping what goes back to the LLM, one-line summaries, keeping secrets out."""

from __future__ import annotations

import time
from collections.abc import Iterable

from llmpool.tools import SUMMARY_MAX_CHARS, ToolResult

__all__ = ["cap_text", "one_line", "scrub", "finished", "failed", "time_left"]

TRUNCATED = "\n[... truncated: {size} bytes in all]"


def cap_text(text: str, max_bytes: int, *, total: int | None = None) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes (marker included), on a character boundary;
    `total` is the full result's size when `text` is already short of it (output dropped while read)."""
    raw = text.encode("utf-8")
    total = max(total or 0, len(raw))
    if total == len(raw) and len(raw) <= max_bytes:
        return text
    marker = TRUNCATED.format(size=total)
    keep = max(0, max_bytes - len(marker.encode("utf-8")))
    # errors="ignore" drops a multi-byte character the cut split in two.
    return raw[:keep].decode("utf-8", errors="ignore") + marker


def one_line(text: str, max_chars: int = SUMMARY_MAX_CHARS) -> str:
    """`text` on one line (whitespace runs collapsed), at most `max_chars` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= max_chars else flat[: max_chars - 3] + "..."


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret value replaced, for anything a remote server wrote back to us."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def finished(content: str, *, started: float, max_bytes: int, summary: str, error: str | None = None,
             dropped: int = 0) -> ToolResult:
    """A ToolResult for a run that produced `content` (its full size recorded before the cap, with the
    `dropped` bytes a runner read but did not keep)."""
    size = len(content.encode("utf-8")) + dropped
    return ToolResult(content=cap_text(content, max_bytes, total=size), error=error,
                      duration=time.monotonic() - started, size=size, summary=one_line(summary))


def failed(error: str, message: str, *, started: float, max_bytes: int) -> ToolResult:
    """A ToolResult for a failed run: `message` for the LLM (the loop shows `error` beside it), which
    may try something else."""
    return finished(message, started=started, max_bytes=max_bytes, summary=f"{error}: {message}", error=error)


def time_left(timeout: float, deadline: float) -> float:
    """Seconds this run may take: its own timeout, or less if the job's deadline (unix time) is nearer."""
    return min(timeout, deadline - time.time())
