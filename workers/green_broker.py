"""Under gevent, the broker's acks wait for a Redis connection instead of failing.

kombu's Redis channel acks through a redis-py `ConnectionPool` capped at `max_connections` (10),
which raises "Too many connections" when all are in use (celery#1350; celery#5618 notes kombu
only builds that non-blocking pool). Threads rarely hit it; ten thousand greenlets whose calls end
together do: the ack fails ("Couldn't ack ... MaxConnectionsError"), and the job's message comes
back after the visibility timeout as a duplicate delivery. With gevent the channel's command pool
blocks for a connection instead, so the same ten connections serve every ack in turn. The BRPOP
connection (kombu's async pool) and Sentinel channels (their own pool) are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from workers.channel_patch import patch_channel
from workers.greenlets import running_green

__all__ = ["install", "ACK_POOL_WAIT"]

# A greenlet waits this long for one of the channel's connections (5,000 calls ending together queue
# their acks for tens of seconds), then fails as Redis being away would.
ACK_POOL_WAIT = 120.0


def blocking_pool(original: Callable[..., Any]) -> Callable[..., Any]:
    """The channel's `_get_pool`, giving a BlockingConnectionPool for its (non-BRPOP) commands."""

    def _get_pool(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return original(self, asynchronous=True)
        params = self._connparams(asynchronous=False)
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        return redis.BlockingConnectionPool(timeout=ACK_POOL_WAIT, **params)

    return _get_pool


def install() -> None:
    """With gevent running, make kombu's plain Redis channel block for a pool connection."""
    if running_green():
        patch_channel("_get_pool", blocking_pool)
