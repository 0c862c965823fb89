"""Per-thread conversation memory: the last N messages of each `thread_id`, with a TTL.

The TT-Studio agent kept one global memory for every thread; here each thread has its own list.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from llmpool.keys import Keys

__all__ = ["ConversationStore"]


class ConversationStore:
    def __init__(self, client: redis.Redis, keys: Keys, *, max_messages: int, ttl: float) -> None:
        self.redis = client
        self.keys = keys
        self.max_messages = max_messages
        self.ttl = int(ttl)

    def history(self, thread_id: str, owner: str | None = None) -> list[dict[str, Any]]:
        """The remembered messages of a thread, oldest first (an owner's thread is theirs alone)."""
        if self.max_messages == 0:
            return []
        raw = self.redis.lrange(self.keys.conversation(thread_id, owner), -self.max_messages, -1)
        return [json.loads(item) for item in raw]

    def append(self, thread_id: str, messages: list[dict[str, Any]], owner: str | None = None) -> None:
        """Remember a turn; only the newest `max_messages` are kept."""
        if self.max_messages == 0 or not messages:
            return
        key = self.keys.conversation(thread_id, owner)
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(key, *[json.dumps(m) for m in messages])
        pipe.ltrim(key, -self.max_messages, -1)
        pipe.expire(key, self.ttl)
        pipe.execute()
