"""Which workers are alive, and what each last said about itself: the owner of the heartbeat keys.

Every worker process (the chat and control workers) beats every 2 s (Celery's event heartbeat):
its node name and time go into one sorted set, its figures (processes, host, GPUs, jobs in
flight, pool size) into a key of its own that lives ALIVE_FOR. A worker that stops beating, killed
or cut off, drops out of `/status` ALIVE_FOR after its last heartbeat: its figures expire then and
its sorted-set entry no longer counts.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from llmpool.codec import as_text
from llmpool.keys import Keys

__all__ = ["WorkerHeartbeats", "FORGET_AFTER", "ALIVE_FOR", "by_host"]

# Killed workers never remove themselves: forget any silent this long.
FORGET_AFTER = 3600.0
# Listed as alive while heard from within this: five missed heartbeats (Celery sends one every 2 s).
ALIVE_FOR = 10.0


class WorkerHeartbeats:
    """A sorted set of worker hostname -> time of its last heartbeat, and each worker's figures."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self.key = keys.workers()

    def beat(self, hostname: str, *, now: float, stats: dict[str, Any] | None = None) -> None:
        """Record `hostname` as alive now (with its figures), and forget workers silent for FORGET_AFTER."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.key, {hostname: now})
        pipe.zremrangebyscore(self.key, "-inf", now - FORGET_AFTER)
        if stats is not None:
            body = json.dumps({**stats, "node": hostname, "at": now})
            pipe.set(self.keys.worker_stats(hostname), body, px=int(ALIVE_FOR * 1000))
        pipe.execute()

    def forget(self, hostname: str) -> None:
        """A worker that stops cleanly leaves at once."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.key, hostname)
        pipe.delete(self.keys.worker_stats(hostname))
        pipe.execute()

    def count_alive(self, pipe: redis.client.Pipeline, *, since: float) -> None:
        """Queue, on `pipe`, the count of workers heard from since `since` (unix time)."""
        pipe.zcount(self.key, since, "+inf")

    def alive_names(self, pipe: redis.client.Pipeline, *, since: float) -> None:
        """Queue, on `pipe`, the names of the workers heard from since `since` (unix time)."""
        pipe.zrangebyscore(self.key, since, "+inf")

    def figures(self, names: list[Any]) -> list[dict[str, Any]]:
        """The last figures of each named worker, in one round trip; a bare entry where none are left."""
        nodes = [as_text(n) for n in names]
        if not nodes:
            return []
        raw = self.redis.mget([self.keys.worker_stats(n) for n in nodes])
        return [_decode(node, body) for node, body in zip(nodes, raw, strict=True)]


def _decode(node: str, body: Any) -> dict[str, Any]:
    if body is None:  # alive a moment ago, its figures just expired (or an older worker without them)
        return {"node": node}
    try:
        data = json.loads(body)
    except ValueError:
        return {"node": node}
    return data if isinstance(data, dict) else {"node": node}


def by_host(workers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Workers grouped by the machine they run on, each machine with its freshest figures."""
    hosts: dict[str, dict[str, Any]] = {}
    for worker in sorted(workers, key=lambda w: str(w.get("node"))):
        name = str(worker.get("host") or str(worker.get("node", "?")).partition("@")[2] or "?")
        entry = hosts.setdefault(name, {"host": None, "gpus": [], "workers": [], "_at": float("-inf")})
        at = float(worker.get("at") or 0)
        if worker.get("host_stats") and at > entry["_at"]:
            entry.update(host=worker["host_stats"], gpus=worker.get("gpus") or [], _at=at)
        entry["workers"].append({k: v for k, v in worker.items() if k not in ("host", "host_stats", "gpus")})
    for entry in hosts.values():
        entry.pop("_at")
    return hosts
