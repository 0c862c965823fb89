"""A job's events as SSE (api/sse.py) and the entry ids a client sends back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from api.sse import format_event, record_events, sse_events
from api.stream_hub import parse_entry_id


def _sse(events: list[dict[str, Any]]) -> list[str]:
    async def collect() -> list[str]:
        return [chunk async for chunk in record_events("j1", events)]
    return asyncio.run(collect())


def test_an_event_has_its_kind_id_and_one_line_of_json() -> None:
    text = format_event("token", {"text": "a\nb"}, "12-3")
    assert text == 'event: token\nid: 12-3\ndata: {"text":"a\\nb"}\n\n'
    assert "id:" not in format_event("tool_calls", {})


def test_the_end_becomes_tool_calls_and_done_or_an_error() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    chunks = _sse([{"type": "token", "text": "hi", "id": "1-0"}, {"type": "reset", "id": "2-0"},
                   {"type": "end", "state": "succeeded", "data": {"content": "", "tool_calls": calls}, "id": "3-0"}])
    assert [c.split("\n")[0] for c in chunks] == ["event: token", "event: reset", "event: tool_calls", "event: done"]
    assert "id: 3-0" in chunks[3] and "id:" not in chunks[2]  # a client cut between the two gets both again
    assert json.loads(chunks[2].split("data: ")[1])["tool_calls"] == calls
    failed = _sse([{"type": "end", "state": "cancelled", "data": {"type": "cancelled", "message": "m"}, "id": "4-0"}])
    data = json.loads(failed[0].split("data: ")[1])
    assert failed[0].startswith("event: error\nid: 4-0") and (data["state"], data["status"]) == ("cancelled", 409)


@pytest.mark.parametrize(("raw", "parsed"), [
    ("1700000000000-3", (1700000000000, 3)), ("17", (17, 0)), (" 5-1 ", (5, 1)),
    ("", None), ("abc", None), ("1-x", None), ("-1", None), ("1-2-3", None), ("9" * 50, None),
])
def test_last_event_ids_from_outside(raw: str, parsed: tuple[int, int] | None) -> None:
    assert parse_entry_id(raw) == parsed


class _SlowSource:
    """Events handed out after a pause each, like a waiter whose job is slow."""

    def __init__(self, events: list[dict[str, Any]], pause: float) -> None:
        self.events, self.pause = list(events), pause

    async def next(self) -> dict[str, Any]:
        await asyncio.sleep(self.pause)
        return self.events.pop(0)


def test_silence_is_filled_with_keepalives_and_no_event_is_lost() -> None:
    source = _SlowSource([{"type": "token", "text": "a", "id": "1-0"},
                          {"type": "end", "state": "succeeded", "data": {}, "id": "2-0"}], pause=0.12)

    async def collect() -> list[str]:
        return [chunk async for chunk in sse_events("j1", source, keepalive=0.05)]

    chunks = asyncio.run(collect())
    kinds = [c.split("\n")[0] for c in chunks]
    assert [k for k in kinds if k != ": keep-alive"] == ["event: token", "event: done"]
    assert kinds.count(": keep-alive") >= 2 and kinds[0] == ": keep-alive"
