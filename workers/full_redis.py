"""A consumer bootstep: a worker meeting a full Redis loses no message and does not stop.

Past `maxmemory` (noeviction) Redis refuses writes, and kombu's Redis transport meets that in two
places it does not expect:
- a message is taken with BRPOP, then its unacked copy is written (a MULTI of ZADD + HSET); when
  that write is refused the message is in no Redis list or hash any more, and the error stops the
  worker ("Unrecoverable error"): the job's message is gone;
- an ack or reject (a MULTI of ZREM + HDEL: Redis refuses every command queued in a MULTI while it
  is out of memory, even a delete) raises into the event loop and stops the worker the same way.
A supervisor that restarts the worker meets the same errors again.

Here a message whose unacked copy is refused is held in the process and put back at the front of
its queue as soon as Redis takes it, and the worker takes no message meanwhile. A refused ack or
reject leaves the message in kombu's unacked hash, from which kombu puts it back on its queue after
the visibility timeout once Redis has room; the worker forgets it locally, so its slot is free.
A chat job whose message comes back is claimed as usual (the claim is the one gate: a finished or
running job is not run twice). What is still lost: a message held by a worker killed before Redis
had room again (one message per worker process at most).

Submit refuses new jobs well before maxmemory (llmpool/redis_memory.py), so this is the second
line of defence, for memory that grew anyway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from queue import Empty
from typing import Any

import redis
from celery import bootsteps
from kombu.transport.virtual.base import QoS as LocalQoS
from kombu.utils.json import dumps
from redis.exceptions import OutOfMemoryError

__all__ = ["FullRedisGuardStep", "FullRedisGuard", "RETRY_EVERY", "holding_messages"]

log = logging.getLogger(__name__)
RETRY_EVERY = 1.0  # seconds between two tries to put a held message back
_guards: list[FullRedisGuard] = []  # this process's, one per consumer (re)start


def holding_messages() -> bool:
    """Whether this worker holds a message back for a full Redis (and so takes none on purpose)."""
    return any(guard.holding for guard in _guards)


class FullRedisGuard:
    """Wraps one kombu Redis channel's QoS: holds, puts back and pauses while Redis is full."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.qos = channel.qos
        self._held: list[tuple[str, str]] = []  # (Redis list, serialized message) to put back
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        qos = self.qos
        if getattr(qos, "_llmpool_guard", None) is not None:
            return
        append: Callable[[Any, Any], None] = qos.append
        ack: Callable[[Any], None] = qos.ack
        reject: Callable[..., None] = qos.reject
        can_consume: Callable[[], bool] = qos.can_consume

        def append_or_hold(message: Any, delivery_tag: Any) -> None:
            try:
                append(message, delivery_tag)
            except OutOfMemoryError:
                self._hold(message)
                raise Empty() from None  # the hub skips this delivery; the message is ours to put back

        def ack_or_leave(delivery_tag: Any) -> None:
            try:
                ack(delivery_tag)
            except OutOfMemoryError:
                self._left_unacked(delivery_tag, "ack")

        def reject_or_leave(delivery_tag: Any, requeue: bool = False) -> None:
            try:
                reject(delivery_tag, requeue=requeue)
            except OutOfMemoryError:
                self._left_unacked(delivery_tag, "requeue" if requeue else "reject")

        qos.append, qos.ack, qos.reject = append_or_hold, ack_or_leave, reject_or_leave
        qos.can_consume = lambda: not self._held and can_consume()
        qos._llmpool_guard = self
        _guards[:] = [self]  # the consumer's previous channel is gone

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def _left_unacked(self, delivery_tag: Any, what: str) -> None:
        log.warning("Redis is full: could not %s message %s; it stays unacked in Redis and comes back "
                    "after the visibility timeout once Redis has room", what, delivery_tag)
        LocalQoS.ack(self.qos, delivery_tag)  # only the local bookkeeping: frees this worker's slot

    def _hold(self, message: Any) -> None:
        info = message.delivery_info
        queues = self.channel._lookup(info["exchange"], info["routing_key"])  # a read: allowed
        payload = dumps(message._raw)
        with self._lock:
            for queue in queues:
                pri = self.channel._get_message_priority(message._raw, reverse=False)
                self._held.append((self.channel._q_for_pri(queue, pri), payload))
        log.warning("Redis is full: message %s could not be recorded as taken; it is held here and put "
                    "back on its queue once Redis has room (this worker takes no message meanwhile)",
                    message.delivery_tag)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._put_back, name="llmpool-full-redis", daemon=True)
            self._thread.start()

    def _put_back(self) -> None:
        client = self.channel.client
        while True:
            with self._lock:
                if not self._held:
                    return
                key, payload = self._held[0]
            try:
                client.rpush(key, payload)  # the end BRPOP takes from: it was next
            except redis.RedisError as exc:
                log.debug("held message not put back yet: %s", exc)
                self._wake.wait(RETRY_EVERY)
                continue
            with self._lock:
                self._held.pop(0)
            log.info("held message put back on %s", key)


class FullRedisGuardStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Guards the task channel each time the consumer (re)starts (kombu's Redis transport only)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "FullRedisGuardStep"

    def start(self, consumer: Any) -> None:
        channel = getattr(consumer.task_consumer, "channel", None)
        if channel is not None and hasattr(getattr(channel, "qos", None), "unacked_key"):
            FullRedisGuard(channel).install()
