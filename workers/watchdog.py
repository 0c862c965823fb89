"""Defence in depth against a deaf worker: connected, idle, and not taking the messages waiting for it.

The known cause (a leaked threads-pool slot after a Redis outage) is fixed in workers/pool_safety.py
and workers/config.py; Celery and kombu have had others (celery#8030, #8091, #10205, kombu#2629).
Whatever the cause, a worker with free slots that takes no message while one of its queues has
held messages for AGENT_DEAF_AFTER seconds stops itself (a warm shutdown, so its running jobs
finish or are handed back) and its supervisor (compose, `llmpool up`) starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import redis
from celery.worker import state

__all__ = ["DeafWatch"]

log = logging.getLogger(__name__)
CHECK_EVERY = 2.0


class DeafWatch:
    """A daemon thread sampling free slots and queue lengths; `on_deaf` runs once when deaf."""

    def __init__(self, client: redis.Redis, *, queues: list[str], slots: int, after: float,
                 on_deaf: Callable[[str], None] | None = None, paused: Callable[[], bool] = lambda: False) -> None:
        """`paused`: True while the worker holds back on purpose (Redis full): not deafness."""
        self.redis = client
        self.queues = queues
        self.slots = slots
        self.after = after
        self.on_deaf = on_deaf or _stop_this_worker
        self.paused = paused
        self._since: float | None = None
        self._taken = state.all_total_count[0]  # messages this worker has taken so far
        self._thread = threading.Thread(target=self._run, name="llmpool-deaf-watch", daemon=True)

    def start(self) -> DeafWatch:
        self._thread.start()
        return self

    def sample(self, now: float) -> str | None:
        """One look; the reason when the worker has been deaf for `after` seconds, else None."""
        free = self.slots - len(state.active_requests)
        pipe = self.redis.pipeline(transaction=False)
        for queue in self.queues:
            pipe.llen(queue)
        waiting = {q: int(n) for q, n in zip(self.queues, pipe.execute(), strict=True) if int(n)}
        # Still taking messages, only slower than they come (a gevent worker with thousands of slots
        # fills them over a minute): behind, not deaf.
        taken, self._taken = self._taken, state.all_total_count[0]
        if free <= 0 or not waiting or self.paused() or self._taken != taken:
            self._since = None
            return None
        self._since = self._since or now
        if now - self._since < self.after:
            return None
        return (f"{free} of {self.slots} slots free while {waiting} messages waited "
                f"{now - self._since:.0f}s: this worker no longer consumes")

    def _run(self) -> None:
        while True:
            time.sleep(CHECK_EVERY)
            try:
                reason = self.sample(time.time())
            except redis.RedisError:  # Redis away: not this worker's deafness
                self._since = None
                continue
            if reason:
                self.on_deaf(reason)
                return


def _stop_this_worker(reason: str) -> None:
    log.error("deaf worker: %s; stopping so that its supervisor starts a fresh one", reason)
    os.kill(os.getpid(), signal.SIGTERM)
