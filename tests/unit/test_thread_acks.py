"""workers.thread_acks: a pool thread acks its own message, within a bound; the loop does the rest."""

from __future__ import annotations

import threading
from typing import Any

from workers.thread_acks import ACKING_THREADS, _in_calling_thread


class Loop:
    """What the step needs of the consumer: its ack scheduler (queues for the loop) and its hub."""

    def __init__(self) -> None:
        self.queued: list[Any] = []  # acks handed to the loop
        self.wakes = 0

    def call_soon_ack(self, p: Any, *args: Any) -> Any:
        self.queued.append((p, args))
        return p

    def call_soon(self, _callback: Any) -> None:
        self.wakes += 1


def _in_thread(fn: Any) -> threading.Thread:
    thread = threading.Thread(target=fn)
    thread.start()
    return thread


def test_a_pool_threads_ack_runs_in_that_thread_and_wakes_the_loop() -> None:
    loop, ran_in = Loop(), []
    ack = _in_calling_thread(loop.call_soon_ack, loop)
    _in_thread(lambda: ack(lambda tag: ran_in.append((tag, threading.current_thread())), "t1")).join(5)
    assert len(ran_in) == 1 and ran_in[0][0] == "t1" and ran_in[0][1] is not threading.main_thread()
    assert loop.queued == [] and loop.wakes == 1


def test_the_loops_own_acks_stay_queued_for_the_loop() -> None:
    loop = Loop()
    ack = _in_calling_thread(loop.call_soon_ack, loop)
    ack(lambda tag: None, "t1")  # pytest runs this in the main thread: the loop's
    assert len(loop.queued) == 1 and loop.wakes == 0


def test_past_the_bound_of_acking_threads_an_ack_goes_to_the_loop() -> None:
    loop, release, started = Loop(), threading.Event(), threading.Semaphore(0)
    ack = _in_calling_thread(loop.call_soon_ack, loop)

    def slow(tag: str) -> None:
        started.release()
        release.wait(5)  # an ack waiting for Redis, holding one of the connections

    busy = [_in_thread(lambda n=n: ack(slow, f"busy{n}")) for n in range(ACKING_THREADS)]
    for _ in busy:
        assert started.acquire(timeout=5)
    _in_thread(lambda: ack(lambda tag: None, "one more")).join(5)
    assert [args for _, args in loop.queued] == [("one more",)]
    release.set()
    for thread in busy:
        thread.join(5)
    assert loop.wakes == ACKING_THREADS
