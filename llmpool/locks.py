"""Fleet-wide locks that keep two passes of one kind (discovery, health, sweep) from interleaving.

A lock lives a few seconds and its holder keeps renewing it while the pass runs: however long a
pass takes it stays alone, and a holder that is killed frees the lock within LOCK_TTL, not after
the longest pass it could have made (a worker killed mid-discovery once kept discovery away for
a minute).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError

from llmpool.keys import Keys

__all__ = ["pass_lock", "LOCK_TTL"]

log = logging.getLogger(__name__)
LOCK_TTL = 6.0  # seconds a lock outlives its holder's last renewal


def _keep(lock: redis.lock.Lock, name: str, done: threading.Event) -> None:
    while not done.wait(LOCK_TTL / 3):
        try:
            lock.reacquire()
        except (LockError, redis.RedisError) as exc:
            log.warning("%s lock could not be renewed: %s", name, exc)
            return


@contextmanager
def pass_lock(client: redis.Redis, keys: Keys, name: str, *, wait: float = 0.0,
              renew: bool = True) -> Iterator[bool]:
    """Yields True while this process holds the lock `name`, False when another pass holds it.

    `wait` seconds: how long to wait for it (0: do not wait, just skip). `renew=False` for passes
    that take well under LOCK_TTL and are harmless if two overlap: no keeper thread is started.
    """
    # thread_local=False: the keeper thread renews the token this thread took.
    lock = client.lock(keys.lock(name), timeout=LOCK_TTL, blocking_timeout=wait or None, thread_local=False)
    if not lock.acquire(blocking=wait > 0):
        yield False
        return
    if not renew:
        try:
            yield True
        finally:
            _release(lock, name)
        return
    done = threading.Event()
    keeper = threading.Thread(target=_keep, args=(lock, name, done), name=f"lock-{name}", daemon=True)
    keeper.start()
    try:
        yield True
    finally:
        done.set()
        keeper.join()
        _release(lock, name)


def _release(lock: redis.lock.Lock, name: str) -> None:
    try:
        lock.release()
    except LockError:
        log.warning("%s lock expired before the pass ended", name)
