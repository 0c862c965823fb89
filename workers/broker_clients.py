"""kombu's Redis channel keeps one client for its plain commands instead of building one per command.

kombu makes a new `redis.Redis` around the channel's connection pool for every publish, every
unacked record and every ack (`Channel.conn_or_acquire`). With redis-py 8 building one costs about
as much as the command it sends (it copies the table of ~200 reply callbacks), and a chat job
makes several. A client over a connection pool holds no connection between commands and is
thread-safe, so one per channel and pool serves them all; a new pool (after a reconnect) gets a new
client. The BRPOP/pub-sub client (`asynchronous=True`) is kombu's as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.channel_patch import patch_channel

__all__ = ["install", "reusing_client"]


def reusing_client(original: Callable[..., Any]) -> Callable[..., Any]:
    """`original` (a channel's _create_client), made once per channel and connection pool."""

    def create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return original(self, asynchronous=True)
        pool = self.pool
        cached = getattr(self, "_llmpool_client", None)
        if cached is None or cached[0] is not pool:
            cached = (pool, original(self))
            self._llmpool_client = cached
        return cached[1]

    return create_client


def install() -> None:
    """Make kombu's Redis (and Sentinel) channels reuse their plain client."""
    patch_channel("_create_client", reusing_client)
