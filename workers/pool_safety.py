"""A worker bootstep: the threads pool never leaks a worker slot when a job escapes Celery's tracer.

With `-P threads`, a job whose result write fails (Redis down) raises out of celery.app.trace;
ThreadPoolExecutor keeps that exception in a Future nobody reads, so the request's callbacks never
run and it stays in `active_requests` / `reserved_requests` for good. After the reconnect,
`worker_disable_prefetch`'s `can_consume()` (reserved >= pool size) is then False forever: the
worker is connected and never asks for another message (the "deaf worker" of celery#8030, #8091,
#10205, kombu#2629 in this configuration). `result_backend_always_retry` (workers/config.py) keeps
the tracer from raising on a Redis blip; this step releases any slot that leaks anyway.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

from celery import bootsteps
from celery.concurrency import thread as thread_pool
from celery.worker import state

__all__ = ["ThreadPoolSafetyNet"]

log = logging.getLogger(__name__)


def _release(task_id: str | None) -> None:
    request = state.requests.get(task_id) if task_id else None
    if request is not None:
        state.task_ready(request)
        return
    for requests in (state.active_requests, state.reserved_requests):
        for leaked in tuple(requests):
            if leaked.id == task_id:
                state.task_ready(leaked)


class ThreadPoolSafetyNet(bootsteps.Step):  # type: ignore[misc]
    """Release requests whose thread-pool job ended without calling back into Celery."""

    requires = ("celery.worker.components:Pool",)
    label = "ThreadPoolSafetyNet"

    def create(self, worker: Any) -> None:
        pool = worker.pool
        if not isinstance(pool, thread_pool.TaskPool):
            return
        apply = pool.on_apply

        def on_apply(target: Any, args: Any = None, kwargs: Any = None, callback: Any = None,
                     **options: Any) -> Any:
            called: list[bool] = []
            task_id = options.get("correlation_id")

            def tracked(*a: Any, **kw: Any) -> Any:
                called.append(True)
                return callback(*a, **kw)

            result = apply(target, args, kwargs, callback=tracked if callback else None, **options)

            def done(future: Future[Any]) -> None:
                if called:
                    return
                error = None if future.cancelled() else future.exception()
                log.error("job %s ended without reaching Celery (%r): its worker slot is released",
                          task_id, error)
                _release(task_id)

            result.f.add_done_callback(done)
            return result

        pool.on_apply = on_apply
