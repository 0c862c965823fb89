"""The deaf-worker watch: free slots and waiting messages, together and for long enough."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from celery.worker import state

from workers.watchdog import DeafWatch


class _Request:
    """Stands in for a Celery request in the worker's set of active ones."""


@pytest.fixture
def watch() -> Iterator[DeafWatch]:
    client = fakeredis.FakeRedis()
    yield DeafWatch(client, queues=["control", "chat.default"], slots=2, after=10, on_deaf=lambda reason: None)
    state.active_requests.clear()


def test_messages_waiting_beside_free_slots_for_long_enough_is_deaf(watch: DeafWatch) -> None:
    watch.redis.rpush("chat.default", "m1", "m2")
    assert watch.sample(100.0) is None  # the clock starts
    assert watch.sample(105.0) is None
    reason = watch.sample(110.0)
    assert reason is not None and "'chat.default': 2" in reason and "2 of 2 slots free" in reason


def test_a_busy_worker_with_a_backlog_is_not_deaf(watch: DeafWatch) -> None:
    watch.redis.rpush("chat.default", "m1")
    running = [_Request(), _Request()]  # the set is weak: keep them alive
    state.active_requests.update(running)
    assert [watch.sample(t) for t in (100.0, 200.0, 300.0)] == [None, None, None]


def test_an_empty_queue_resets_the_clock(watch: DeafWatch) -> None:
    watch.redis.rpush("control", "m1")
    assert watch.sample(100.0) is None
    watch.redis.delete("control")
    assert watch.sample(108.0) is None
    watch.redis.rpush("control", "m1")
    assert watch.sample(109.0) is None and watch.sample(118.0) is None  # 9 s since it filled again
    assert watch.sample(119.0) is not None


def test_a_worker_holding_back_for_a_full_redis_is_not_deaf() -> None:
    paused = [True]
    watch = DeafWatch(fakeredis.FakeRedis(), queues=["chat.default"], slots=2, after=10,
                      on_deaf=lambda reason: None, paused=lambda: paused[0])
    watch.redis.rpush("chat.default", "m1")
    assert [watch.sample(t) for t in (100.0, 200.0)] == [None, None]
    paused[0] = False  # Redis has room again: the clock starts now
    assert watch.sample(201.0) is None and watch.sample(212.0) is not None


def test_a_worker_taking_messages_slower_than_they_come_is_not_deaf(watch: DeafWatch) -> None:
    """A gevent worker with thousands of free slots fills them over a minute: behind, not deaf."""
    watch.redis.rpush("chat.default", *[f"m{i}" for i in range(100)])
    assert watch.sample(100.0) is None
    for t in (105.0, 110.0, 115.0):
        state.all_total_count[0] += 1  # one more message accepted since the last look
        assert watch.sample(t) is None
    assert watch.sample(120.0) is None  # nothing taken since 115: the clock starts now
    assert watch.sample(129.0) is None
    assert watch.sample(130.0) is not None  # ten seconds without taking one: deaf
