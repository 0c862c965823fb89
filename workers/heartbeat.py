"""Each worker's heartbeat in Redis, with its figures: what `/status` and `llmpool status` show per host.

Celery's event heartbeat (every 2 s, in the worker's main process) triggers it, so a worker that
stops beating for Flower stops beating here too. The figures cover the whole worker: its main
process and, with prefork, its pool children.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from celery import signals
from celery.worker import state as worker_state

from llmpool import resources
from llmpool.heartbeats import WorkerHeartbeats
from llmpool.host_stats import GpuSampler, ProcessSampler, host_figures

__all__ = ["WorkerFigures"]

log = logging.getLogger(__name__)
CHAT_TASK = "llmpool.chat"


class WorkerFigures:
    """The figures one worker reports each heartbeat; its pool is known once the worker is ready."""

    def __init__(self) -> None:
        self.processes = ProcessSampler()
        self.gpus = GpuSampler()
        self.pool: dict[str, Any] = {}

    def set_pool(self, pool: Any, queues: list[str]) -> None:
        kind = type(pool).__module__.rpartition(".")[2]  # celery.concurrency.thread -> thread
        self.pool = {"pool": {"thread": "threads"}.get(kind, kind), "concurrency": pool.num_processes,
                     "queues": queues}

    def sample(self) -> dict[str, Any]:
        active = list(worker_state.active_requests)
        return {
            **self.pool, "host": socket.gethostname(), "pid": self.processes.root.pid,
            "in_flight_jobs": sum(1 for r in active if getattr(r, "name", None) == CHAT_TASK),
            "active_tasks": len(active), "process": self.processes.sample(), "host_stats": host_figures(),
            "gpus": self.gpus.sample(),
        }


_figures: WorkerFigures | None = None


def figures() -> WorkerFigures:
    global _figures
    if _figures is None:
        _figures = WorkerFigures()
    return _figures


@signals.worker_ready.connect
def _know_the_pool(sender: Any = None, **_: Any) -> None:
    if sender is not None:
        figures().set_pool(sender.pool, [q.name for q in sender.task_consumer.queues])


@signals.heartbeat_sent.connect
def _heartbeat(sender: Any = None, **_: Any) -> None:
    """Record this worker as alive, with its figures; the API lists workers heard from lately."""
    hostname = getattr(getattr(sender, "eventer", None), "hostname", None)
    if not hostname:
        return
    res = resources.current()
    try:
        WorkerHeartbeats(res.redis, res.keys).beat(hostname, now=time.time(), stats=figures().sample())
    except Exception as exc:  # a heartbeat must never take the worker down
        log.warning("could not record heartbeat: %s", exc)
