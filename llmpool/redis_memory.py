"""How full Redis is, and what llmpool does about it.

Redis holds the broker's queues and every job record, under `maxmemory-policy noeviction`: an
evicting policy would silently drop job records and queued messages. Past `maxmemory` it refuses
writes, and Celery/kombu cope badly with that (a worker whose ack is refused stops; a message taken
from a queue whose unacked copy is refused is gone). So llmpool stops short of it:

- past AGENT_REDIS_MEMORY_WARN of maxmemory the operator is warned (a WARNING from the control
  worker's memory task, rate-limited, and `redis_memory` in `/status`);
- past SUBMIT_LIMIT of maxmemory, submit refuses new jobs (503 `redis_full`; job_create.lua checks
  it in the same atomic step that writes the record), leaving the rest for the jobs already
  accepted to finish. Its INFO memory is skipped for MEMORY_ROOM_MS (llmpool.jobs) after a submit
  that found Redis under half its maxmemory: no writer fills half a Redis in 50 ms.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

__all__ = ["RedisMemory", "MemoryWarner", "read_memory", "SUBMIT_LIMIT", "WARN_EVERY"]

log = logging.getLogger(__name__)
SUBMIT_LIMIT = 0.95  # of maxmemory: new jobs are refused past it; the rest is for finishing accepted ones
WARN_EVERY = 300.0  # seconds between two WARNING lines while Redis stays past the warning threshold
SAFE_POLICY = "noeviction"


@dataclass(frozen=True)
class RedisMemory:
    """One reading of INFO memory, judged against the warning threshold."""

    used: int
    maxmemory: int
    policy: str
    warn_at: float

    @property
    def fraction(self) -> float | None:
        return self.used / self.maxmemory if self.maxmemory else None

    @property
    def state(self) -> str:
        """`ok`, `warning` (past warn_at), `refusing_jobs` (past SUBMIT_LIMIT), `full`, or `no_limit`."""
        fraction = self.fraction
        if fraction is None:
            return "no_limit"
        if fraction >= 1.0:
            return "full"
        if fraction >= SUBMIT_LIMIT:
            return "refusing_jobs"
        return "warning" if fraction >= self.warn_at else "ok"

    def problem(self) -> str | None:
        """What the operator should hear about, or None when all is well."""
        if self.policy != SAFE_POLICY:
            return (f"Redis maxmemory-policy is {self.policy}: it may evict job records and queued "
                    f"messages; set {SAFE_POLICY}")
        state = self.state
        if state == "no_limit":
            return ("Redis has no maxmemory: under noeviction it grows until the machine runs out; "
                    "set one (AGENT_REDIS_MAXMEMORY for `llmpool up` and compose)")
        if state == "ok":
            return None
        used = f"Redis uses {self.used / 2**20:.0f} MiB of its {self.maxmemory / 2**20:.0f} MiB maxmemory"
        if state == "warning":
            return (f"{used} ({self.fraction:.0%}): new jobs will be refused past {SUBMIT_LIMIT:.0%}; raise "
                    "maxmemory or shorten AGENT_RESULT_TTL")
        return f"{used} ({self.fraction:.0%}): new jobs are refused (503 redis_full) until it has room"

    def to_dict(self) -> dict[str, Any]:
        fraction = self.fraction
        return {"used": self.used, "maxmemory": self.maxmemory, "policy": self.policy,
                "used_fraction": round(fraction, 4) if fraction is not None else None,
                "warn_at": self.warn_at, "refuse_jobs_at": SUBMIT_LIMIT, "state": self.state,
                "warning": self.problem()}


def parse_memory(info: dict[str, Any], *, warn_at: float) -> RedisMemory:
    """A reading from the dict redis-py makes of `INFO memory`."""
    return RedisMemory(used=int(info.get("used_memory", 0)), maxmemory=int(info.get("maxmemory", 0)),
                       policy=str(info.get("maxmemory_policy", "unknown")), warn_at=warn_at)


def read_memory(client: redis.Redis, *, warn_at: float) -> RedisMemory:
    """Read INFO memory once (a read: Redis answers it even when full)."""
    return parse_memory(client.info("memory"), warn_at=warn_at)


class MemoryWarner:
    """Logs a WARNING when Redis needs the operator: at once on a change, then every WARN_EVERY."""

    def __init__(self, every: float = WARN_EVERY) -> None:
        self.every = every
        self._last: tuple[str | None, float] = (None, float("-inf"))

    def check(self, memory: RedisMemory, *, now: float | None = None) -> str | None:
        """Log the problem if it is new or due again; returns what was logged, if anything."""
        now = time.monotonic() if now is None else now
        problem = memory.problem()
        kind = None if problem is None else f"{memory.policy}:{memory.state}"
        last_kind, last_at = self._last
        if kind is None:
            if last_kind is not None:
                log.info("Redis memory back to normal: %s", memory.to_dict()["used_fraction"])
            self._last = (None, float("-inf"))
            return None
        if kind == last_kind and now - last_at < self.every:
            return None
        self._last = (kind, now)
        log.warning("%s", problem)
        return problem
