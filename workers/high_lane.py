"""Worker slots kept for high-priority jobs: a high job never waits for a low one to finish.

With `worker_disable_prefetch` a worker takes a message only when a slot is free, and takes the
first one of its `-Q` order (chat.high before chat.low). Behind a low-priority backlog every slot
is busy, so a high-priority job waited for the next low call to end, then for the event loop to see
the free slot and send its BRPOP (issue 12: about half of the extra wait behind 2,000 low jobs).

AGENT_HIGH_PRIORITY_SLOTS adds that many threads to the pool (`-c` stays the slots every queue
uses) and gives them a consumer of their own, on a channel of its own, that reads only chat.high.
Each channel counts only the jobs it took: the task consumer at most `-c`, the lane at most the
lane's slots. So low-priority throughput keeps all `-c` slots, a high job finds a BRPOP already
waiting on chat.high, and a message a channel has taken (or a BRPOP it has sent) always has a slot,
so kombu never pauses a reply that holds a message popped from Redis.

Off by default (0): in one bench run of about ten with a lane, both workers' task channels stopped
sending BRPOPs early in the run while their lanes went on, and one high job sat in a task channel's
unread BRPOP reply (popped from Redis, not yet in kombu's unacked hash) until the worker stopped.
The task channel's prefetch count not counting the lane's jobs (fixed here) paused that channel
for short spells; whether it explains that run is not known yet.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.worker import state

from llmpool.schemas import queue_for
from llmpool.settings import get_settings
from workers.full_redis import FullRedisGuard, FullRedisGuardStep

__all__ = ["HighLanePool", "HighLane", "lane_slots", "general_slots"]

log = logging.getLogger(__name__)
HIGH_QUEUE = queue_for("high")


def lane_slots(worker: Any) -> int:
    """The slots this worker keeps for high-priority jobs: the setting, if it consumes chat.high."""
    queues = worker.app.amqp.queues
    consumed = {q.name for q in queues.consume_from.values()} if queues.consume_from else set(queues)
    return get_settings().agent_high_priority_slots if HIGH_QUEUE in consumed else 0


def general_slots(pool: Any) -> int:
    """The pool's slots that every queue uses (its size without the lane's)."""
    return int(pool.num_processes) - int(getattr(pool, "llmpool_lane_slots", 0))


class HighLanePool(bootsteps.Step):  # type: ignore[misc]
    """Grows the pool by the lane's slots before the pool is made (steps are built in order)."""

    requires = ("celery.worker.components:Pool",)
    label = "HighLanePool"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.slots = 0 if worker.autoscale else lane_slots(worker)
        worker.min_concurrency += self.slots

    def create(self, worker: Any) -> None:
        worker.pool.llmpool_lane_slots = self.slots


class HighLane(bootsteps.ConsumerStep):  # type: ignore[misc]
    """The lane's own consumer of chat.high, and each channel's count of the jobs it took."""

    requires = ("celery.worker.consumer.tasks:Tasks", FullRedisGuardStep)
    label = "HighLane"

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self.lane_ids: set[str] = set()  # ids of the jobs the lane took that have not finished

    def start(self, c: Any) -> None:
        self.consumers = []
        self.slots = int(getattr(c.pool, "llmpool_lane_slots", 0))
        task_channel = c.task_consumer.channel
        queue = next((q for q in c.task_consumer.queues if q.name == HIGH_QUEUE), None)
        if not self.slots or queue is None or not hasattr(task_channel.qos, "unacked_key"):
            return  # no lane configured, chat.high not consumed, or not kombu's Redis transport
        general, lane = c.pool.num_processes - self.slots, self.slots
        task_can_consume = task_channel.qos.can_consume
        task_channel.qos.can_consume = lambda: len(state.reserved_requests) - self._lane_busy() < general \
            and task_can_consume()
        # kombu delivers the lane's messages through the task channel's QoS too (see below): its
        # prefetch count, -c, must leave room for them, or a lane job pauses that channel's BRPOP.
        c.qos.increment_eventually(lane)
        c.qos.update()
        channel = c.connection.channel()
        FullRedisGuard(channel).install(only=False)
        lane_can_consume = channel.qos.can_consume
        # While the task consumer does not consume chat.high (a cancel_consumer), neither does the lane.
        channel.qos.can_consume = lambda: self._lane_busy() < lane and HIGH_QUEUE in task_channel.active_queues \
            and lane_can_consume()
        self._count_what_the_lane_takes(channel)
        consumer = c.app.amqp.TaskConsumer(channel, queues=[queue], on_decode_error=c.on_decode_error)
        consumer.on_message = c.create_task_handler()
        consumer.consume()
        self.consumers = [consumer]
        log.info("%d slot(s) kept for %s beside the %d every queue uses", lane, HIGH_QUEUE, general)

    def _count_what_the_lane_takes(self, channel: Any) -> None:
        """kombu delivers by queue name through the connection (one callback per queue, whichever
        channel's BRPOP popped the message), so the lane counts the requests its own reads reserve."""
        read = channel._brpop_read

        def read_and_count(**options: Any) -> Any:
            # set(dict) copies in one C call, so a pool thread ending a job cannot change it midway
            # (iterating state.reserved_requests, a WeakSet, could raise "changed size").
            before = set(state.requests)
            try:
                return read(**options)
            finally:
                self.lane_ids |= set(state.requests) - before

        channel._brpop_read = read_and_count
        channel.handlers["BRPOP"] = read_and_count

    def _lane_busy(self) -> int:
        """Jobs the lane took that are not finished (state.requests: reserved, by id)."""
        if self.lane_ids:
            self.lane_ids = {job_id for job_id in self.lane_ids if job_id in state.requests}
        return len(self.lane_ids)
