"""An upstream's error body made into a short, clean line for the caller's error message. Pure.

Servers put anything in an error: llama-cpp-python's 500 carries `str(exception)` (a pydantic
report, a Jinja error), a proxy an HTML page, a debug server a whole Python traceback with its
file paths. The caller gets one line: the reason a 400 gives, or the exception a traceback ends
with, never the frames or a server's file paths, at most MAX_CHARS long.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["short_error", "MAX_CHARS"]

MAX_CHARS = 200
TRACEBACK = "Traceback (most recent call last)"
# An absolute path of two or more parts (/app/x.py, C:\srv\x.py); a URL's is left alone (its first
# slash follows ':' or '/', the next ones a word character). Only a file's (a name with an
# extension) or one under a filesystem root is a server's path: "/v1/chat/completions" stays.
_PATH = re.compile(r"(?<![\w:/.\\])(?:[A-Za-z]:)?(?:[/\\][\w.\-]+){2,}")
_FILE = re.compile(r"\.[A-Za-z0-9]{1,8}$")
_ROOTS = ("app", "home", "usr", "opt", "tmp", "var", "srv", "root", "models", "mnt", "data", "etc", "work")
_TAG = re.compile(r"<[^>]*>")
_FRAME = re.compile(r'^\s*(File "|at |\^|~)')


def _message_in(data: Any) -> Any:
    """The message an OpenAI-style, FastAPI-style or bare JSON error carries."""
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict):
            inner = inner.get("message") or inner.get("detail") or inner.get("msg") or inner
        if isinstance(inner, list) and inner:  # FastAPI's 422 detail: [{"loc": ..., "msg": ...}]
            inner = inner[0]
        if isinstance(inner, dict):
            return inner.get("msg") or inner.get("message") or json.dumps(inner)
        return inner
    return data


def _meaningful_line(text: str) -> str:
    lines = [line.strip() for line in _TAG.sub("\n", text).splitlines()]
    lines = [line for line in lines if line and not _FRAME.match(line)]
    if not lines:
        return ""
    if any(line.startswith(TRACEBACK) for line in lines):
        return lines[-1]  # "ValueError: ...": what was raised; the frames above are the server's own
    return lines[0]


def _hidden(match: re.Match[str]) -> str:
    path = match.group(0)
    first = re.split(r"[/\\]", path.split(":", 1)[-1].lstrip("/\\"), maxsplit=1)[0]
    return "<path>" if _FILE.search(path) or first.lower() in _ROOTS else path


def short_error(body: bytes) -> str:
    """One clean line of an error body: its message's first meaningful line, no paths, capped."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        text = str(_message_in(json.loads(text)))
    except ValueError:
        pass
    line = _PATH.sub(_hidden, _meaningful_line(text))
    return line if len(line) <= MAX_CHARS else line[: MAX_CHARS - 1] + "…"
