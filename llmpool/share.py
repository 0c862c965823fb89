"""The fleet's chat slots, which each endpoint's concurrency share is a fraction of.

A hung endpoint holds every call sent to it until that call's first-token timeout; without a cap,
at 8 chats a second it takes every thread of every worker within seconds and the healthy
endpoints behind it get none. So, unless AGENT_ENDPOINT_LIMITS gives it a max_concurrency, an
endpoint may hold at most AGENT_ENDPOINT_SHARE of the fleet's chat slots (llmpool.admission
`limits_for`); a job refused by the share tries the next candidate, or waits parked.

The fleet's chat slots are the summed pool sizes of the live workers that consume a chat queue,
as their heartbeats report them (llmpool.heartbeats), read at most every REFRESH seconds per
process. With one endpoint selected the jobs have nowhere else to go, so no share applies (0);
nor while a live worker has not reported its pool yet (it has just started): a share of a
count that misses workers would be too strict.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from llmpool.heartbeats import ALIVE_FOR, WorkerHeartbeats

__all__ = ["FleetSlots", "chat_slots", "REFRESH"]

log = logging.getLogger(__name__)
REFRESH = 5.0  # seconds a process keeps the fleet's slot count before reading it again
CHAT_QUEUE_PREFIX = "chat."


def chat_slots(figures: list[dict[str, Any]]) -> int:
    """Summed concurrency of the workers whose queues include a chat queue; 0 if a pool is unknown."""
    total = 0
    for worker in figures:
        if "queues" not in worker or "concurrency" not in worker:
            return 0  # a worker starting up, or one whose figures just expired
        if any(str(q).startswith(CHAT_QUEUE_PREFIX) for q in worker["queues"] or []):
            total += max(0, int(worker["concurrency"] or 0))
    return total


class FleetSlots:
    """The fleet's chat slots as a share's base, or 0 when no share applies; cached REFRESH seconds."""

    def __init__(self, heartbeats: WorkerHeartbeats, *, others: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.heartbeats = heartbeats
        self.others = others  # True while the selection has more than one endpoint
        self.clock = clock
        self._slots = 0
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> int:
        if not self.others():
            return 0
        with self._lock:
            if self.clock() - self._read_at >= REFRESH:
                self._read_at = self.clock()
                self._slots = self._read()
            return self._slots

    def _read(self) -> int:
        try:
            pipe = self.heartbeats.redis.pipeline(transaction=False)
            self.heartbeats.alive_names(pipe, since=time.time() - ALIVE_FOR)
            names = pipe.execute()[0]
            return chat_slots(self.heartbeats.figures(names))
        except redis.RedisError as exc:  # keep the last count: admission itself will meet the outage
            log.warning("could not read the workers' slots: %s", exc)
            return self._slots
