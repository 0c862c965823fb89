"""Splitting a byte stream into SSE lines, with a cap on each line and on the whole stream.

httpx's `iter_lines` keeps an unbounded buffer, so a server that sends one endless line grows our
memory without limit; this splitter holds at most one line of `max_line` bytes. Lines end at CRLF,
LF or CR, as the SSE format allows (a CR at the end of one chunk and an LF at the start of the next
are one line end). Those bytes never occur inside a multi-byte UTF-8 sequence, so each whole line
is decoded once: a character split across two network chunks is decoded intact, and the work stays
linear in the bytes received.
"""

from __future__ import annotations

import re

from llmpool.errors import LineTooLong, ResponseTooLarge

__all__ = ["LineSplitter", "ByteBudget"]

_LINE_END = re.compile(rb"\r\n|\r|\n")


class ByteBudget:
    """Counts the bytes of one answer; ResponseTooLarge once they pass `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise ResponseTooLarge(f"the answer passed AGENT_MAX_RESPONSE_BYTES ({self.limit} bytes)",
                                   limit=self.limit)


class LineSplitter:
    """Feed raw chunks, get back the complete lines they finish (decoded, without line ends)."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._partial = bytearray()
        self._after_cr = False  # the last chunk ended with CR: an LF starting the next one is its pair

    def feed(self, data: bytes) -> list[str]:
        """The lines `data` completes; LineTooLong when an unfinished line passes `max_line` bytes."""
        start = 1 if self._after_cr and data[:1] == b"\n" else 0
        self._after_cr = False
        lines = []
        for match in _LINE_END.finditer(data, start):
            self._extend(data, start, match.start())
            lines.append(self._partial.decode("utf-8", errors="replace"))
            self._partial.clear()
            start = match.end()
            self._after_cr = match.group() == b"\r" and start == len(data)
        self._extend(data, start, len(data))
        return lines

    def finish(self) -> list[str]:
        """The last line, if the stream ended without a line end after it."""
        if not self._partial:
            return []
        line = self._partial.decode("utf-8", errors="replace")
        self._partial.clear()
        return [line]

    def _extend(self, data: bytes, start: int, end: int) -> None:
        if len(self._partial) + (end - start) > self.max_line:
            raise LineTooLong(f"an SSE line passed AGENT_MAX_LINE_BYTES ({self.max_line} bytes)",
                              limit=self.max_line)
        self._partial += data[start:end]
