"""Which workers are alive: the owner of the workers heartbeat key."""

from __future__ import annotations

import redis

from llmpool.keys import Keys

__all__ = ["WorkerHeartbeats", "FORGET_AFTER"]

# Killed workers never remove themselves: forget any silent this long.
FORGET_AFTER = 3600.0


class WorkerHeartbeats:
    """A sorted set of worker hostname -> time of its last heartbeat."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.key = keys.workers()

    def beat(self, hostname: str, *, now: float) -> None:
        """Record `hostname` as alive now, and forget workers silent for FORGET_AFTER."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.key, {hostname: now})
        pipe.zremrangebyscore(self.key, "-inf", now - FORGET_AFTER)
        pipe.execute()

    def forget(self, hostname: str) -> None:
        """A worker that stops cleanly leaves at once."""
        self.redis.zrem(self.key, hostname)

    def count_alive(self, pipe: redis.client.Pipeline, *, since: float) -> None:
        """Queue, on `pipe`, the count of workers heard from since `since` (unix time)."""
        pipe.zcount(self.key, since, "+inf")
