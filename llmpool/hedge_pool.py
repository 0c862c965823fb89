"""The threads a worker process's hedged calls run on: one timer thread and a small bounded pool.

A chat call blocks its worker thread until its answer ends, so a second call for the same job (a
hedge) needs a thread of its own. Every process has one HedgePool: a single timer thread wakes at
each call's hedge time (a heap, so a thousand calls waiting cost one thread, not a thousand), and
a fixed number of hedge threads run the hedges. A hedge that finds every hedge thread busy is not
sent at all (`submit` returns None): hedges can never add more calls in flight than the pool has
threads, however many jobs wait on a hung endpoint.

How big: a quarter of the worker's concurrency, at least 2 (`hedge_threads`), so hedges add at most
25% to what the worker has in flight. In steady state only calls slower than the endpoint's p95 are
hedged (about 5% of them); during an outage every call to the hung endpoint is, and a hedge holds
its thread only while the other endpoint answers (seconds), so 16 threads for a 64-thread worker
rescue ~16 / answer time jobs a second, above the load that one worker's hung share can take.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["HedgePool", "Timer", "hedge_threads"]

log = logging.getLogger(__name__)
T = TypeVar("T")
HEDGE_SHARE = 4  # hedge threads = worker concurrency / this


def hedge_threads(concurrency: int) -> int:
    """Hedge threads for a worker process running `concurrency` jobs at once (see the module doc)."""
    return max(2, concurrency // HEDGE_SHARE)


class Timer:
    """One scheduled callback; `cancel` keeps it from running if it has not started. It runs in a
    copy of its scheduler's context, so a hedge's log lines name the job (llmpool.logs)."""

    __slots__ = ("fn", "cancelled", "context")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.cancelled = False
        self.context = contextvars.copy_context()

    def cancel(self) -> None:
        self.cancelled = True


class HedgePool:
    """A timer thread and `threads` hedge threads, started on first use, shared by every job of a process."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._running = 0  # hedges on a hedge thread now, at most `threads`
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="llmpool-hedge")
        self._due: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._timer_thread: threading.Thread | None = None
        self._closed = False

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Run `fn` on the timer thread after `delay` seconds (it must be quick: it may `submit`)."""
        timer = Timer(fn)
        with self._wake:
            heapq.heappush(self._due, (time.monotonic() + max(0.0, delay), next(self._order), timer))
            if self._timer_thread is None:
                self._timer_thread = threading.Thread(target=self._run_timers, name="llmpool-hedge-timer",
                                                      daemon=True)
                self._timer_thread.start()
            self._wake.notify()
        return timer

    def submit(self, fn: Callable[[], T]) -> Future[T] | None:
        """Run `fn` on a free hedge thread; None, at once, when every one is busy."""
        with self._lock:
            if self._closed or self._running >= self.threads:
                return None
            self._running += 1

        def run() -> T:
            try:
                return fn()
            finally:
                self._done()

        try:
            return self._executor.submit(contextvars.copy_context().run, run)  # the submitter's job context
        except RuntimeError:  # shut down between the check and here
            self._done()
            return None

    def busy(self) -> int:
        """Hedge threads running a hedge now."""
        with self._lock:
            return self._running

    def _done(self) -> None:
        with self._lock:
            self._running -= 1

    def close(self) -> None:
        """Stop the timer thread and take no more hedges; running ones finish on their own."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run_timers(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if self._closed:
                    return
                _, _, timer = heapq.heappop(self._due)
            if not timer.cancelled:
                try:
                    timer.context.run(timer.fn)
                except Exception:  # one job's bug must not stop every other job's hedges
                    log.exception("a hedge timer failed")
