"""Job state in Redis: the record of each chat job and the event stream its answer flows through.

A job record is a hash (state, queue, attempts, lease, endpoint, result or error). Its stream
carries `token` events (when the job streams), `reset` events (a restart on another endpoint:
discard what you had) and exactly one final `end` event. A stream, not pub/sub, so a reader that
attaches late still sees everything from the start.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import redis

from llmpool.codec import as_text
from llmpool.keys import Keys
from llmpool.scripts import register

__all__ = ["JobStore", "Claim", "EventPublisher", "decode_event", "FINAL_STATES"]

READ_BLOCK_MS = 5000  # one blocking XREAD waits at most this long, so a reader notices its own limit

FINAL_STATES = ("succeeded", "failed", "expired", "cancelled")
Verdict = Literal["run", "done", "busy", "exhausted"]
STREAM_MAXLEN = 10_000
FLUSH_INTERVAL = 0.05  # batch tokens for 50 ms: one XADD per batch, not per token


@dataclass(frozen=True)
class Claim:
    verdict: Verdict
    attempts: int
    state: str
    created_at: float | None = None  # set when verdict is "run"
    deadline: float | None = None  # the deadline recorded at submission, if any
    started_at: float | None = None



def decode_event(fields: dict[Any, Any]) -> dict[str, Any]:
    """One stream entry as a dict; the `end` event's JSON payload is decoded."""
    event = {as_text(k): as_text(v) for k, v in fields.items()}
    if "data" in event:
        event["data"] = json.loads(event["data"])
    return event


class JobStore:
    """Reads and writes job records and job streams; the only writer of both."""

    def __init__(self, client: redis.Redis, keys: Keys, *, ttl: float, stream_ttl: float) -> None:
        self.redis = client
        self.keys = keys
        self.ttl = int(ttl)
        self.stream_ttl = int(stream_ttl)
        self._claim = register(client, "job_claim")
        self._create = register(client, "job_create")
        self._release = register(client, "job_release")

    def create(self, job_id: str, *, queue: str, deadline: float, summary: str) -> bool:
        """Record a submitted job; False when the id exists already (nothing is changed)."""
        args = [queue, repr(deadline), summary, self.ttl]
        return bool(self._create(keys=[self.keys.job(job_id)], args=args))

    def claim(self, job_id: str, *, worker: str, lease: float, max_attempts: int) -> Claim:
        """Move a delivered job to running, or say why this delivery must not run it."""
        reply = self._claim(keys=[self.keys.job(job_id)], args=[worker, lease, max_attempts, self.ttl])
        times = [float(as_text(v)) if as_text(v) else None for v in reply[3:]] + [None] * 3
        return Claim(as_text(reply[0]), int(reply[1]), as_text(reply[2]),  # type: ignore[arg-type]
                     created_at=times[0], deadline=times[1] or None, started_at=times[2])

    def release(self, job_id: str) -> bool:
        """Hand a running job back to wait in its queue; False if it was not running."""
        return bool(self._release(keys=[self.keys.job(job_id)], args=[self.ttl]))

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        record: dict[str, Any] = {as_text(k): as_text(v) for k, v in raw.items()}
        for field in ("result", "error"):
            if field in record:
                record[field] = json.loads(record[field])
        for field in ("created_at", "started_at", "finished_at", "lease_until", "deadline"):
            if field in record:
                record[field] = float(record[field])
        record["attempts"] = int(record.get("attempts", 0))
        return record

    def stream_key(self, job_id: str) -> str:
        """The key of the job's event stream, for readers that XREAD it themselves (async ones)."""
        return self.keys.job_stream(job_id)

    def events(self, job_id: str, *, until: float) -> Iterator[dict[str, Any]]:
        """Every event of the job's stream from its start, ending after `end`; `until` is unix time.

        Raises TimeoutError when `until` passes first.
        """
        key, last_id = self.keys.job_stream(job_id), "0-0"
        while True:
            remaining = until - time.time()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} had not finished")
            block = max(1, min(READ_BLOCK_MS, int(remaining * 1000)))
            reply: Any = self.redis.xread({key: last_id}, block=block, count=100)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    event = decode_event(fields)
                    yield event
                    if event.get("type") == "end":
                        return

    def publisher(self, job_id: str, *, stream_tokens: bool) -> EventPublisher:
        return EventPublisher(self, job_id, stream_tokens=stream_tokens)

    def finish(self, job_id: str, state: str, payload: dict[str, Any], **fields: Any) -> None:
        """Final state and its end event, in one MULTI: readers never see one without the other."""
        field = "result" if state == "succeeded" else "error"
        data = json.dumps(payload)
        record = {"state": state, field: data, "finished_at": time.time(), **fields}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.job(job_id), mapping=record)  # type: ignore[arg-type]  # redis-py types are invariant
        pipe.expire(self.keys.job(job_id), self.ttl)
        pipe.xadd(self.keys.job_stream(job_id), {"type": "end", "state": state, "data": data},
                  maxlen=STREAM_MAXLEN, approximate=True)
        pipe.expire(self.keys.job_stream(job_id), self.stream_ttl)
        pipe.execute()

    def append_events(self, job_id: str, events: list[dict[str, str]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            pipe.xadd(self.keys.job_stream(job_id), event, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
        pipe.expire(self.keys.job_stream(job_id), self.stream_ttl)
        pipe.execute()


class EventPublisher:
    """Collects one job's tokens and writes them to its stream in small batches."""

    def __init__(self, store: JobStore, job_id: str, *, stream_tokens: bool) -> None:
        self.store = store
        self.job_id = job_id
        self.stream_tokens = stream_tokens
        self._buffer: list[str] = []
        self._last_flush = time.monotonic()
        self.published = 0  # token batches written: a restart after this needs a reset event

    def token(self, text: str) -> None:
        if not self.stream_tokens:
            return
        self._buffer.append(text)
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        text, self._buffer = "".join(self._buffer), []
        self.store.append_events(self.job_id, [{"type": "token", "text": text}])
        self.published += 1

    def reset(self) -> None:
        """Tell readers to drop the partial answer: the job restarts on another endpoint."""
        self._buffer.clear()
        if self.published:
            self.store.append_events(self.job_id, [{"type": "reset"}])
            self.published = 0

    def end(self, state: str, payload: dict[str, Any], **fields: Any) -> None:
        if state == "succeeded":
            self.flush()
        self.store.finish(self.job_id, state, payload, **fields)
