"""Task events (Flower's) go out a few times a second in batches, not once per event loop turn.

Celery buffers task events and asks the event loop to publish the buffer "soon" after each one: a
pool thread's event wakes the loop (a write to its waker pipe), and the loop publishes each turn's
events in a round trip of its own. A threads worker's loop also fetches every message (BRPOP,
then the unacked record) and acks every job, one at a time: at 150 jobs/s of a 100-thread worker,
the loop spent more wall time publishing events (1.7 round trips per job) than fetching messages,
and it is that loop that keeps the threads fed (issue 12: slots stood idle behind a backlog).

Here the buffer is published every FLUSH_INTERVAL seconds by a timer of the loop, and the events
ask for nothing: a worker publishes at most 1 / FLUSH_INTERVAL batches a second of loop time.
Celery still publishes from the sending thread when a buffer reaches its limit (24 events), and
what is buffered at stop is published then. Flower sees an event at most FLUSH_INTERVAL later.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

__all__ = ["BatchedEvents", "FLUSH_INTERVAL"]

log = logging.getLogger(__name__)
FLUSH_INTERVAL = 0.1  # seconds: well under what a person watching Flower notices


def _flush(consumer: Any) -> None:
    dispatcher = consumer.event_dispatcher
    if dispatcher is not None:
        try:
            dispatcher.flush()
        except Exception as exc:  # a broker outage: Celery re-buffers what it could not publish
            log.debug("task events not published yet: %s", exc)


class BatchedEvents(bootsteps.StartStopStep):  # type: ignore[misc]
    """Publishes the consumer's buffered task events on a timer instead of once per loop turn."""

    requires = ("celery.worker.consumer.events:Events",)
    label = "BatchedEvents"

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self.timer: Any = None
        if consumer.hub is not None:
            # Events.start passes this to each dispatcher it makes (at every reconnect): events no
            # longer schedule a publish, the timer does.
            consumer.on_send_event_buffered = lambda: None

    def start(self, consumer: Any) -> None:
        if consumer.hub is not None and self.timer is None:
            self.timer = consumer.hub.call_repeatedly(FLUSH_INTERVAL, _flush, consumer)

    def stop(self, consumer: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        _flush(consumer)  # the last events before the dispatcher closes (Events stops after this step)
