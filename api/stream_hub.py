"""One reader per API process for every job stream its HTTP clients wait on.

A waiting client used to hold a Redis connection of its own in a blocking XREAD, and kept it after
it had gone: a thousand abandoned clients took a thousand connections. Now one task, the hub,
XREADs every followed stream on one connection and hands the entries to per-client buffers
(`Waiter`); a client's wait costs a Waiter, not a connection, and ends when it closes it.

A waiter that starts following a stream must not wait for the XREAD in flight to time out. The
hub also reads a wake stream of its own, and `follow` XADDs to it while an XREAD is in flight (at
most one wake per XREAD), which returns at once and is sent again with the new stream in it. We
chose this over cancelling the XREAD: redis-py drops the connection of a cancelled command (it
cannot know how much of the reply is still unread), so each new client would cost a reconnect.

Every waiter reads its stream from the start (`0-0`), so a late joiner still sees the tokens and
the `end` already there; a client that reconnects (SSE's Last-Event-ID) follows from the entry after
the one it had. Each event handed out carries its entry id as `id`. A client that does not read
(a slow HTTP client) is not read for once
MAX_BUFFERED events wait for it: its memory stays bounded, and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from llmpool.codec import as_text
from llmpool.errors import Overloaded
from llmpool.jobs import READ_BLOCK_MS, decode_event
from llmpool.keys import Keys

__all__ = ["StreamHub", "Waiter", "WaitTimeout", "parse_entry_id"]

log = logging.getLogger(__name__)

BATCH = 100  # entries read per stream per XREAD
MAX_BUFFERED = 200  # unread events past which a waiter's stream is left out of the XREAD
WAKE_TTL = 60  # seconds: the wake stream of an API process that died goes with it
RETRY_MAX = 2.0  # the longest pause between XREADs while Redis fails

EntryId = tuple[int, int]


def _entry_id(raw: Any) -> EntryId:
    ms, _, seq = as_text(raw).partition("-")
    return int(ms), int(seq or 0)


def parse_entry_id(text: str) -> EntryId | None:
    """A stream entry id from outside (`1700000000000-3`), or None when it is not one."""
    ms, dash, seq = text.strip().partition("-")
    if not (ms.isdigit() and (not dash or seq.isdigit())) or len(text) > 41:
        return None
    return int(ms), int(seq or 0)


class WaitTimeout(Exception):
    """The job produced no final event before the wait limit."""


class Waiter:
    """One client's wait: the events of the stream it follows, buffered until it reads them."""

    def __init__(self, hub: StreamHub) -> None:
        self._hub = hub
        self.key: str | None = None
        self.until = 0.0
        self.position: EntryId = (0, 0)  # the last entry put in the buffer
        self.ended = False  # the `end` event is in the buffer: nothing more to read
        self.closed = False
        self._buffer: deque[dict[str, Any]] = deque()
        self._arrived = asyncio.Event()

    def follow(self, key: str, *, until: float, after: EntryId = (0, 0)) -> None:
        """Read the stream at `key` from the entry after `after` (its start by default) until its
        `end`, or until `until` (unix time)."""
        self.key, self.until, self.position = key, until, after
        self._hub.attach(self)

    @property
    def buffered(self) -> int:
        """Events read for this client that it has not taken yet."""
        return len(self._buffer)

    @property
    def has_room(self) -> bool:
        return len(self._buffer) < MAX_BUFFERED

    def deliver(self, entry_id: EntryId, event: dict[str, Any]) -> None:
        """Called by the hub: one more event of the stream, in order."""
        self._buffer.append({**event, "id": f"{entry_id[0]}-{entry_id[1]}"})
        self.position = entry_id
        self.ended = event.get("type") == "end"
        self._arrived.set()

    async def next(self) -> dict[str, Any]:
        """The next event; WaitTimeout once `until` passes first."""
        while not self._buffer:
            remaining = self.until - time.time()
            if remaining <= 0:
                raise WaitTimeout()
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                raise WaitTimeout() from None
        was_full = not self.has_room
        event = self._buffer.popleft()
        if was_full:
            self._hub.wake()  # its stream was left out of the XREAD in flight
        return event

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event from the start of the stream, ending after `end`."""
        while True:
            event = await self.next()
            yield event
            if event.get("type") == "end":
                return

    async def end(self) -> dict[str, Any]:
        """The `end` event, skipping the tokens before it."""
        while (event := await self.next()).get("type") != "end":
            pass
        return event

    def close(self) -> None:
        """Leave the hub at once (idempotent); the job itself goes on."""
        if not self.closed:
            self.closed = True
            self._buffer.clear()
            self._hub.detach(self)


class StreamHub:
    """The API process's one reader of job streams, shared by every waiting client."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, max_waiters: int,
                 block_ms: int = READ_BLOCK_MS) -> None:
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.max_waiters = max_waiters
        self._redis = client
        self._block_ms = block_ms
        self._wake_key = keys.api_wake(self.id)
        self._wake_position = "0-0"
        self._waiters: set[Waiter] = set()  # every open waiter, following a stream or about to
        self._following: dict[str, set[Waiter]] = {}  # stream key -> its waiters
        self._reading = False  # an XREAD is in flight
        self._woken = False  # ... and a wake was sent for it
        self._task: asyncio.Task[None] | None = None
        self._wakes: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def stats(self) -> dict[str, int]:
        return {"waiters": len(self._waiters), "max_waiters": self.max_waiters, "streams": len(self._following)}

    def waiter(self) -> Waiter:
        """A place for one more waiting client; Overloaded when AGENT_API_MAX_WAITERS already wait."""
        if len(self._waiters) >= self.max_waiters:
            raise Overloaded(f"The API is overloaded: {self.max_waiters} clients are already waiting for "
                             "answers (AGENT_API_MAX_WAITERS); nothing was enqueued, retry later")
        waiter = Waiter(self)
        self._waiters.add(waiter)
        return waiter

    def attach(self, waiter: Waiter) -> None:
        assert waiter.key is not None
        self._following.setdefault(waiter.key, set()).add(waiter)
        self.wake()

    def detach(self, waiter: Waiter) -> None:
        self._waiters.discard(waiter)
        followers = self._following.get(waiter.key or "")
        if followers is not None:
            followers.discard(waiter)
            if not followers:
                del self._following[waiter.key or ""]

    def wake(self) -> None:
        """End the XREAD in flight now, so that it is sent again with what changed since."""
        if self._reading and not self._woken:
            self._woken = True
            task = asyncio.get_running_loop().create_task(self._send_wake())
            self._wakes.add(task)
            task.add_done_callback(self._wakes.discard)

    async def _send_wake(self) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"wake": "1"}, maxlen=1, approximate=False)
                pipe.expire(self._wake_key, WAKE_TTL)
                await pipe.execute()
        except RedisError as exc:  # the XREAD returns by itself within its block time
            log.debug("stream hub: no wake sent (%s)", exc)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stream-hub")

    async def close(self) -> None:
        for task in [t for t in (self._task, *self._wakes) if t is not None]:
            # Cancel until it ends: on Python 3.11 a cancel that lands as redis-py's send (inside
            # asyncio.wait_for) completes is lost (CPython gh-86296, fixed in 3.12).
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
        try:
            await self._redis.delete(self._wake_key)
        except RedisError:
            pass  # it expires by itself

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._read_once()
            except RedisError as exc:  # Redis down or failing over: the waiters wait on, up to their deadlines
                failures += 1
                if failures == 1:
                    log.warning("stream hub: reading job streams failed (%s); retrying", exc)
                await asyncio.sleep(min(RETRY_MAX, 0.05 * 2 ** min(failures, 6)))
            except Exception:  # a bug of ours must not leave every waiting client without answers
                failures += 1
                log.exception("stream hub: reading job streams failed; retrying")
                await asyncio.sleep(RETRY_MAX)
            else:
                if failures:
                    log.warning("stream hub: reading job streams again after %d failed reads", failures)
                    failures = 0

    async def _read_once(self) -> None:
        """One XREAD of every stream with a waiter that has room, and its entries handed out."""
        streams = self._streams_to_read()
        self._reading, self._woken = True, False
        try:
            reply = await self._redis.xread(streams, block=self._block_ms, count=BATCH)  # type: ignore[arg-type]
        finally:
            self._reading = False
        self._dispatch(reply.items() if isinstance(reply, dict) else reply or [], streams)

    def _streams_to_read(self) -> dict[str, str]:
        """The wake stream, and every followed stream from the earliest position a waiter with room is at."""
        streams = {self._wake_key: self._wake_position}
        for key, followers in self._following.items():
            positions = [w.position for w in followers if not w.ended and w.has_room]
            if positions:
                ms, seq = min(positions)
                streams[key] = f"{ms}-{seq}"
        return streams

    def _dispatch(self, reply: Iterable[Any], read_from: dict[str, str]) -> None:
        """Hand each entry to the waiters it is news to.

        A read returns the entries right after its start: a waiter that is further back (it joined
        while the XREAD was in flight) would get a gap, so it gets nothing now and the next read
        starts from its position.
        """
        for raw_key, entries in reply:
            key = as_text(raw_key)
            if key == self._wake_key:
                self._wake_position = as_text(entries[-1][0])
                continue
            start = _entry_id(read_from[key])
            followers = [w for w in self._following.get(key, ()) if w.position >= start]
            for raw_id, fields in entries:
                entry_id, event = _entry_id(raw_id), decode_event(fields)
                for waiter in followers:
                    if entry_id > waiter.position and not waiter.ended:
                        waiter.deliver(entry_id, event)
