"""Reading a job's event stream from the API: XREAD with a bounded block, never pub/sub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from llmpool.jobs import decode_event, read_block_ms

__all__ = ["job_events", "WaitTimeout"]

BLOCK_MS = 5000


class WaitTimeout(Exception):
    """The job produced no final event before the wait limit."""


async def job_events(client: aioredis.Redis, key: str, *, until: float) -> AsyncIterator[dict[str, Any]]:
    """Every event of the stream at `key` from its start, ending after `end`; `until` is unix time."""
    last_id = "0-0"
    while (block := read_block_ms(until, cap_ms=BLOCK_MS)) is not None:
        reply: Any = await client.xread({key: last_id}, block=block, count=100)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last_id = entry_id
                event = decode_event(fields)
                yield event
                if event.get("type") == "end":
                    return
    raise WaitTimeout()
