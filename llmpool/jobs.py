"""Job state in Redis: the record of each chat job, its history, and the stream its answer flows through.

A job record is a hash (state, queue, payload, attempts, claims, calls, lease, result or error).
Its stream carries `token` events (when the job streams), `reset` events (a restart on another
endpoint or by another worker: discard what you had) and exactly one final `end` event. A stream,
not pub/sub, so a reader that attaches late still sees everything from the start.

Three sorted sets let the sweep find work no worker holds: `running` (lease expiry), `parked`
(due time) and `unpublished` (jobs that may have no message on the broker). Every move between
states is one Lua script, and every write of a run names its claim number, so a run whose lease
lapsed and whose job was handed to another worker can no longer change it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import redis

from llmpool.codec import as_text
from llmpool.errors import RedisFull
from llmpool.keys import Keys
from llmpool.scripts import Command, ScriptCall, register, send_together

__all__ = ["JobStore", "Claim", "AdmitWith", "RunEnd", "Recovered", "EventPublisher", "decode_event", "read_block_ms",
           "FINAL_STATES"]

FINAL_STATES = ("succeeded", "failed", "expired", "cancelled")
Verdict = Literal["run", "done", "busy", "exhausted"]
STREAM_MAXLEN = 10_000
RESET_SCAN = 50  # stream events a restart reads back to find whether a partial answer stands
FLUSH_INTERVAL = 0.05  # batch tokens for 50 ms: one XADD per batch, not per token
REDIS_FULL = "Redis is full (past its memory limit for new jobs): the job was not accepted; try again later"
# A submit that found Redis under half its maxmemory spares the next ones INFO memory this long.
MEMORY_ROOM_MS = 50
READ_BLOCK_MS = 2000  # one blocking XREAD waits at most this long: below redis-py 8.x default 5 s socket timeout
FLOAT_FIELDS = ("created_at", "started_at", "finished_at", "lease_until", "deadline", "due_at")
INT_FIELDS = ("attempts", "claims", "calls")


@dataclass(frozen=True)
class Claim:
    verdict: Verdict
    attempts: int
    state: str
    claim: int = 0  # this run's number; 0 when the delivery must not run the job
    calls: int = 0  # LLM calls earlier runs of the job made (one call budget per job)
    created_at: float | None = None  # set when verdict is "run"
    deadline: float | None = None  # the deadline recorded at submission, if any
    started_at: float | None = None
    admitted: list[Any] | None = None  # admit.lua's reply, when the claim admitted the run's first call


@dataclass(frozen=True)
class AdmitWith:
    """A first call to admit in the claim's round trip (llmpool.gate.RedisGate.first_admission):
    admit.lua's keys, and job_start.lua's arguments after the claim's."""

    keys: Sequence[str]
    args: Sequence[Any]


@dataclass(frozen=True)
class RunEnd:
    """What a run's end sends with the job's finish, in its one round trip: `before` it (the last
    call's settlement), `after` it (metrics any run adds) and, applied only when this finish ends
    the job, `if_ended` (HINCRBY / HINCRBYFLOAT commands: the job's own count)."""

    before: Sequence[ScriptCall] = ()
    after: Sequence[Command] = ()
    if_ended: Sequence[tuple[str, str, str, int | float]] = ()


@dataclass(frozen=True)
class Recovered:
    """A job the sweep took back from a dead run, a due wait, or a lost publish."""

    job_id: str
    queue: str
    payload: dict[str, Any]
    why: str


def decode_event(fields: dict[Any, Any]) -> dict[str, Any]:
    """One stream entry as a dict; the `end` event's JSON payload is decoded."""
    event = {as_text(k): as_text(v) for k, v in fields.items()}
    if "data" in event:
        event["data"] = json.loads(event["data"])
    return event


def read_block_ms(until: float, *, cap_ms: int = READ_BLOCK_MS) -> int | None:
    """How long the next blocking XREAD of a reader that stops at `until` may wait; None once past."""
    remaining = until - time.time()
    return None if remaining <= 0 else max(1, min(cap_ms, int(remaining * 1000)))


def _claim_from(reply: list[Any]) -> Claim:
    times = [_number(v) for v in reply[5:]] + [None] * 3
    return Claim(as_text(reply[0]), int(reply[1]), as_text(reply[2]),  # type: ignore[arg-type]
                 claim=int(reply[3]), calls=int(reply[4]), created_at=times[0], deadline=times[1] or None,
                 started_at=times[2])


def _number(raw: Any) -> float | None:
    text = as_text(raw) if raw is not None else ""
    return float(text) if text else None


class JobStore:
    """Reads and writes job records, histories and streams; the only writer of all three."""

    def __init__(self, client: redis.Redis, keys: Keys, *, ttl: float, stream_ttl: float) -> None:
        self.redis = client
        self.keys = keys
        self.ttl = int(ttl)
        self.stream_ttl = int(stream_ttl)
        self._scripts = {name: register(client, name) for name in (
            "job_create", "job_abandon", "job_claim", "job_start", "job_renew", "job_park", "job_finish", "job_recover",
            "job_cancel")}
        self._step_script = register(client, "job_step")  # the tool loop's checkpoints (llmpool.tool_loop)

    def create(self, job_id: str, *, queue: str, deadline: float, summary: str,
               payload: Mapping[str, Any], memory_limit: float = 0.0, owner: str | None = None) -> bool:
        """Record a submitted job with its payload; False when the id exists already (nothing changes).

        `memory_limit`: a fraction of Redis's maxmemory past which the job is refused (RedisFull,
        nothing written); 0 checks nothing.
        """
        args = [job_id, queue, repr(deadline), summary, self.ttl, json.dumps(payload), memory_limit, owner or "",
                MEMORY_ROOM_MS]
        created = self._scripts["job_create"](
            keys=[self.keys.job(job_id), self.keys.jobs_unpublished(), self.keys.memory_room()], args=args)
        if created == -1:
            raise RedisFull(REDIS_FULL, job_id=job_id)
        return bool(created)

    def published(self, job_id: str) -> None:
        """The broker holds the job's message: the sweep need not publish it again."""
        self.redis.zrem(self.keys.jobs_unpublished(), job_id)

    def abandon(self, job_id: str) -> bool:
        """Remove a job whose message could not be published (only if no worker claimed it)."""
        return bool(self._scripts["job_abandon"](keys=[self.keys.job(job_id), self.keys.jobs_unpublished()],
                                                 args=[job_id]))

    def claim(self, job_id: str, *, worker: str, lease: float, max_attempts: int,
              admit: AdmitWith | None = None) -> Claim:
        """Move a delivered job to running, or say why this delivery must not run it.

        With `admit`, a first run's call is admitted in the same round trip (llmpool/lua/job_start.lua):
        admit.lua's raw reply is in `Claim.admitted`, for the gate to read.
        """
        k = self.keys
        keys = [k.job(job_id), k.jobs_running(), k.jobs_parked(), k.jobs_unpublished(), k.job_history(job_id)]
        args = [job_id, worker, lease, max_attempts, self.ttl]
        if admit is None:
            return _claim_from(self._scripts["job_claim"](keys=keys, args=args))
        claimed, admitted = self._scripts["job_start"](keys=[*keys, *admit.keys], args=[*args, *admit.args])
        return replace(_claim_from(claimed), admitted=admitted or None)

    def renew(self, held: Mapping[str, int], *, lease: float) -> set[str]:
        """Extend the leases of the jobs this process runs (id -> claim); the ids it no longer holds."""
        if not held:
            return set()
        ids = list(held)
        args: list[Any] = [lease]
        for job_id in ids:
            args += [held[job_id], job_id]
        keys = [self.keys.jobs_running(), *(self.keys.job(j) for j in ids)]
        return {as_text(j) for j in self._scripts["job_renew"](keys=keys, args=args)}

    def park(self, job_id: str, *, claim: int, delay: float, calls: int,
             history: list[dict[str, Any]]) -> bool:
        """Hand a running job back to wait in Redis for `delay` seconds; False if this run lost it."""
        k = self.keys
        keys = [k.job(job_id), k.jobs_running(), k.jobs_parked(), k.job_history(job_id)]
        args = [job_id, claim, max(0.0, delay), calls, self.ttl, json.dumps(history)]
        return bool(self._scripts["job_park"](keys=keys, args=args))

    def finish(self, job_id: str, state: str, payload: dict[str, Any], *, claim: int | None = None,
               calls: int = 0, history: list[dict[str, Any]] | None = None, along: RunEnd | None = None) -> bool:
        """Final state, stored outcome and the `end` event at once; False if nothing was written
        (the job was final already, or `claim` no longer holds it). `along`: what the run's end
        sends in the same round trip (its last call's settlement, its metrics)."""
        k = self.keys
        keys = [k.job(job_id), k.job_stream(job_id), k.jobs_running(), k.jobs_parked(), k.jobs_unpublished(),
                k.job_history(job_id)]
        entry = {"event": state, "at": time.time(), **({"endpoint": payload["endpoint"]} if "endpoint" in payload
                                                        else {"error": payload.get("type")})}
        args = [job_id, "" if claim is None else claim, state, "result" if state == "succeeded" else "error",
                json.dumps(payload), calls, self.ttl, self.stream_ttl, STREAM_MAXLEN,
                json.dumps([*(history or []), entry])]
        if along is None:
            return bool(self._scripts["job_finish"](keys=keys, args=args))
        metric_keys = list(dict.fromkeys(key for _, key, _, _ in along.if_ended))
        counts = [[7 + metric_keys.index(key), name, str(amount), "float" if verb == "HINCRBYFLOAT" else "int"]
                  for verb, key, name, amount in along.if_ended]
        finish = ScriptCall(self._scripts["job_finish"], [*keys, *metric_keys], [*args, json.dumps(counts)])
        replies = send_together(self.redis, [*along.before, finish, *along.after])
        ended = replies[len(along.before)]
        if isinstance(ended, Exception):
            raise ended
        return bool(ended)

    def checkpoint_step(self, job_id: str, *, claim: int, checkpoint: dict[str, Any],
                        history: list[dict[str, Any]], events: list[dict[str, Any]]) -> bool:
        """Store a tool loop's state after a completed round, add its steps to the history and the
        stream (`step` events), at once; False if this run no longer holds the job (nothing written)."""
        keys = [self.keys.job(job_id), self.keys.job_history(job_id), self.keys.job_stream(job_id)]
        args = [claim, json.dumps(checkpoint), json.dumps(history), json.dumps([json.dumps(e) for e in events]),
                self.ttl, self.stream_ttl, STREAM_MAXLEN]
        return bool(self._step_script(keys=keys, args=args))

    def tool_checkpoint(self, job_id: str) -> dict[str, Any] | None:
        """The tool loop's last checkpoint of the job (llmpool.tool_loop), None when it has none."""
        raw = self.redis.hget(self.keys.job(job_id), "tool_checkpoint")
        return json.loads(as_text(raw)) if raw else None

    def cancel(self, job_id: str, *, reason: str = "cancelled by its client") -> tuple[str, str]:
        """Cancel a job that has not ended: ("cancelled", the state it had), ("final", its state) when
        it had ended already, or ("unknown", "") when no job has this id."""
        k = self.keys
        keys = [k.job(job_id), k.job_stream(job_id), k.jobs_running(), k.jobs_parked(), k.jobs_unpublished(),
                k.job_history(job_id)]
        error = json.dumps({"type": "cancelled", "message": f"the job was cancelled: {reason}"})
        entry = json.dumps({"event": "cancelled", "at": time.time()})
        verdict, state = self._scripts["job_cancel"](
            keys=keys, args=[job_id, error, self.ttl, self.stream_ttl, STREAM_MAXLEN, entry])
        return as_text(verdict), as_text(state)

    def cancelled(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs are cancelled (one round trip): their runs must stop now."""
        if not job_ids:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "state")
        return {j for j, state in zip(job_ids, pipe.execute(), strict=True)
                if state is not None and as_text(state) == "cancelled"}

    def recover(self, *, limit: int, republish_grace: float) -> list[Recovered]:
        """Take orphaned, due and unpublished jobs for the sweep to publish (each stays in
        `unpublished` until `published` is called, so a sweep that dies here loses nothing)."""
        k = self.keys
        reply = self._scripts["job_recover"](
            keys=[k.jobs_running(), k.jobs_parked(), k.jobs_unpublished()],
            args=[k.job(""), k.job_history(""), limit, republish_grace, self.ttl])
        flat = [as_text(v) for v in reply]
        return [Recovered(flat[i], flat[i + 1], json.loads(flat[i + 2]), flat[i + 3]) for i in range(0, len(flat), 4)]

    def next_due(self) -> float:
        """The unix time at which the sweep next has work: a parked job due or a lease lapsing."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(self.keys.jobs_parked(), 0, 0, withscores=True)
        pipe.zrange(self.keys.jobs_running(), 0, 0, withscores=True)
        firsts = [float(reply[0][1]) for reply in pipe.execute() if reply]
        return min(firsts, default=float("inf"))

    def counts(self) -> dict[str, int]:
        """How many jobs are running, parked, and waiting for their message to be confirmed."""
        pipe = self.redis.pipeline(transaction=False)
        for key in (self.keys.jobs_running(), self.keys.jobs_parked(), self.keys.jobs_unpublished()):
            pipe.zcard(key)
        running, parked, unpublished = pipe.execute()
        return {"running": int(running), "parked": int(parked), "unpublished": int(unpublished)}

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's record with its history; None if unknown (the payload is not returned)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.job(job_id))
        pipe.lrange(self.keys.job_history(job_id), 0, -1)
        raw, history = pipe.execute()
        if not raw:
            return None
        record: dict[str, Any] = {as_text(k): as_text(v) for k, v in raw.items()}
        record.pop("payload", None)
        record.pop("tool_checkpoint", None)  # the tool loop's messages: the history has its steps
        for name in ("result", "error"):
            if name in record:
                record[name] = json.loads(record[name])
        for name in FLOAT_FIELDS:
            if name in record:
                record[name] = float(record[name])
        for name in INT_FIELDS:
            record[name] = int(record.get(name, 0))
        record["history"] = [json.loads(as_text(h)) for h in history]
        return record

    def stream_key(self, job_id: str) -> str:
        """The key of the job's event stream, for readers that XREAD it themselves (async ones)."""
        return self.keys.job_stream(job_id)

    def stream_after(self, job_id: str, after: tuple[int, int]) -> list[dict[str, Any]] | None:
        """The events of the job's stream after entry `after`, each with its entry `id`; None when
        the stream is gone (its TTL passed). For a finished job: nothing more will come."""
        key = self.keys.job_stream(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrange(key, min=f"({after[0]}-{after[1]}", max="+", count=STREAM_MAXLEN)
        pipe.exists(key)
        entries, exists = pipe.execute()
        if not exists:
            return None
        return [{**decode_event(fields), "id": as_text(entry_id)} for entry_id, fields in entries]

    def events(self, job_id: str, *, until: float) -> Iterator[dict[str, Any]]:
        """Every event of the job's stream from its start, ending after `end`; `until` is unix time.

        Raises TimeoutError when `until` passes first.
        """
        key, last_id = self.keys.job_stream(job_id), "0-0"
        while (block := read_block_ms(until)) is not None:
            reply: Any = self.redis.xread({key: last_id}, block=block, count=100)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    event = decode_event(fields)
                    yield event
                    if event.get("type") == "end":
                        return
        raise TimeoutError(f"job {job_id} had not finished")

    def publisher(self, job_id: str, *, stream_tokens: bool, claim: int | None = None) -> EventPublisher:
        return EventPublisher(self, job_id, stream_tokens=stream_tokens, claim=claim)

    def tokens_since_reset(self, job_id: str) -> bool:
        """Whether the job's stream holds a token after its last reset: a partial answer readers show.

        One read of the stream's last RESET_SCAN events (steps may follow a reset); past them, yes."""
        entries: list[Any] = self.redis.xrevrange(self.keys.job_stream(job_id), count=RESET_SCAN) or []
        for _entry_id, fields in entries:
            kind = {as_text(k): as_text(v) for k, v in (fields or {}).items()}.get("type")
            if kind in ("token", "reset"):
                return kind == "token"
        return len(entries) >= RESET_SCAN

    def append_events(self, job_id: str, events: list[dict[str, str]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            pipe.xadd(self.keys.job_stream(job_id), event, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
        pipe.expire(self.keys.job_stream(job_id), self.stream_ttl)
        pipe.execute()


@dataclass
class EventPublisher:
    """Collects one run's tokens and writes them to the job's stream in small batches.

    `lost` is set when the run no longer holds the job (its lease lapsed and another worker took
    it): from then on nothing of this run reaches readers. `cancelled` is set (with `lost`) when
    the job was cancelled: `stop` also ends the run's calls in flight, which the runner registers
    with `watch` (anything with a `cancel()`: llmpool.http_deadline.CallCancel).
    """

    store: JobStore
    job_id: str
    stream_tokens: bool
    claim: int | None = None
    lost: bool = False
    published: int = 0  # token batches written: a restart after this needs a reset event
    cancelled: bool = False
    _buffer: list[str] = field(default_factory=list)
    _calls: set[Any] = field(default_factory=set)  # the run's calls in flight, to end on `stop`
    _calls_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_flush: float = field(default_factory=time.monotonic)

    def watch(self, call: Any) -> None:
        """A call of this run starts: `stop` ends it (at once, if the job was cancelled already)."""
        with self._calls_lock:
            self._calls.add(call)
            cancelled = self.cancelled
        if cancelled:
            call.cancel()

    def unwatch(self, call: Any) -> None:
        with self._calls_lock:
            self._calls.discard(call)

    def stop(self) -> None:
        """The job was cancelled: write nothing more and end every call in flight now."""
        with self._calls_lock:
            self.cancelled = self.lost = True
            calls = list(self._calls)
        for call in calls:
            call.cancel()

    def token(self, text: str) -> None:
        if not self.stream_tokens or self.lost:
            return
        self._buffer.append(text)
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer or self.lost:
            return
        text, self._buffer = "".join(self._buffer), []
        self.store.append_events(self.job_id, [{"type": "token", "text": text}])
        self.published += 1

    def reset(self) -> None:
        """Tell readers to drop the partial answer: the job restarts on another endpoint."""
        self._buffer.clear()
        if self.published and not self.lost:
            self.store.append_events(self.job_id, [{"type": "reset"}])
            self.published = 0

    def restart(self) -> None:
        """A new run of a job an earlier run may have streamed into: readers drop what came before.

        Once per partial answer: an earlier run that failed over said `reset` itself (`reset`), so
        only tokens after the stream's last reset (a run that died mid-answer) need one now."""
        if self.stream_tokens and self.store.tokens_since_reset(self.job_id):
            self.store.append_events(self.job_id, [{"type": "reset"}])

    def end(self, state: str, payload: dict[str, Any], *, calls: int = 0,
            history: list[dict[str, Any]] | None = None, along: RunEnd | None = None) -> bool:
        """Finish the job; False if this run no longer held it (nothing was written)."""
        if state == "succeeded":
            self.flush()
        return self.store.finish(self.job_id, state, payload, claim=self.claim, calls=calls, history=history,
                                 along=along)
