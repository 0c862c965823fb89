"""Fleet-wide locks that keep two passes of one kind (discovery, health, sweep) from interleaving."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError

from llmpool.keys import Keys

__all__ = ["pass_lock"]

log = logging.getLogger(__name__)
LOCK_MARGIN = 30.0  # a pass that outlives its expected time by this loses the lock


@contextmanager
def pass_lock(client: redis.Redis, keys: Keys, name: str, *, hold: float, wait: float = 0.0,
              margin: float = LOCK_MARGIN) -> Iterator[bool]:
    """Yields True while this process holds the lock `name`, False when another pass holds it.

    `wait` seconds: how long to wait for it (0: do not wait, just skip). The lock expires
    `hold + margin` seconds after it was taken, so a killed holder blocks others that long at most.
    """
    lock = client.lock(keys.lock(name), timeout=hold + margin, blocking_timeout=wait or None)
    acquired = lock.acquire(blocking=wait > 0)
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except LockError:
                log.warning("%s lock expired before the pass ended", name)
