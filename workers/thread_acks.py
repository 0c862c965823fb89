"""With the threads pool, a job's thread acks its own message instead of queueing the ack for the loop.

Celery hands every ack (and reject) to the consumer's event loop. With kombu's Redis transport an
ack is a round trip (ZREM + HDEL of the unacked record) that the loop then makes, one per job, in
the thread that also fetches every message (BRPOP, then the unacked record): at 150 jobs/s of a
100-thread worker that loop was the limit, and slots stood idle behind a backlog (issue 12).
kombu's Redis QoS acks through a client of its own from a thread-safe connection pool, and its
bookkeeping is a set add, so the job's thread can make the round trip itself; it then wakes the
loop (one byte to its waker pipe, as Celery's own ack did) so the loop sees the free slot at once.

The ack still comes where it came (task_acks_late: after the job's end is written), only in
another thread. At most ACKING_THREADS threads ack at once: kombu's channel pool holds at most
`max_connections` (10) connections and raises, not waits, past it (a 100-thread worker that let
every thread ack lost acks to MaxConnectionsError and stalled); a thread that finds them all
acking hands its ack to the loop, as Celery does. Acks made on the loop's thread, and workers
without an event loop (gevent's), are Celery's as before.
"""

from __future__ import annotations

import logging
import threading
from functools import wraps
from typing import Any

from celery import bootsteps
from celery.concurrency.thread import TaskPool
from vine import promise

__all__ = ["ThreadAcks"]

log = logging.getLogger(__name__)
# Below kombu's default max_connections (10), leaving the loop its own connections (BRPOP reads
# go through another pool; the unacked record, restores and sweeps through this one).
ACKING_THREADS = 4


def _noop() -> None:
    """What the loop runs when woken after an ack: its next turn looks for a free slot."""


class ThreadAcks(bootsteps.Step):  # type: ignore[misc]
    """Acks (and rejects) from a pool thread run in that thread; the loop is only woken."""

    label = "ThreadAcks"

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        # Set before the Tasks step builds the task handler, which reads consumer.call_soon_ack.
        if consumer.hub is not None and isinstance(consumer.pool, TaskPool):
            consumer.call_soon_ack = _in_calling_thread(consumer.call_soon_ack, consumer.hub)


def _in_calling_thread(call_soon_ack: Any, hub: Any) -> Any:
    wake = promise(_noop)
    loop_thread = threading.main_thread()  # the worker's consumer loop runs in the main thread
    acking = threading.BoundedSemaphore(ACKING_THREADS)

    @wraps(call_soon_ack)
    def call_soon_ack_here(p: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is loop_thread or not acking.acquire(blocking=False):
            return call_soon_ack(p, *args, **kwargs)
        try:
            p(*args, **kwargs)
        except Exception:  # as Celery's own immediate path: the message stays unacked and comes back
            log.exception("ack from a pool thread failed")
        finally:
            acking.release()
        hub.call_soon(wake)
        return p

    return call_soon_ack_here
