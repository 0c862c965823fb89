"""The fleet's chat slots behind each endpoint's concurrency share (llmpool.share)."""

from __future__ import annotations

import time

import redis

from llmpool.heartbeats import WorkerHeartbeats
from llmpool.keys import Keys
from llmpool.share import REFRESH, FleetSlots, chat_slots

CHAT = ["control", "chat.high", "chat.default", "chat.low"]


def test_only_workers_that_run_chat_jobs_count() -> None:
    assert chat_slots([{"concurrency": 64, "queues": CHAT}, {"concurrency": 4, "queues": ["control"]},
                       {"concurrency": 8, "queues": ["chat.low"]}]) == 72


def test_no_count_while_a_live_worker_has_not_reported_its_pool() -> None:
    """A share of a count missing that worker's slots would be too strict: no share until it reports."""
    assert chat_slots([{"concurrency": 64, "queues": CHAT}, {"node": "w2@b", "pid": 7}]) == 0


def test_fleet_slots_come_from_live_heartbeats_and_apply_only_with_somewhere_else_to_go(
        any_redis: redis.Redis) -> None:
    beats = WorkerHeartbeats(any_redis, Keys("t"))
    beats.beat("w1@a", now=time.time(), stats={"concurrency": 16, "queues": CHAT})
    beats.beat("control@a", now=time.time(), stats={"concurrency": 4, "queues": ["control"]})
    beats.beat("gone@b", now=time.time() - 60, stats={"concurrency": 64, "queues": CHAT})  # long silent
    others = [True]
    now = [0.0]
    slots = FleetSlots(beats, others=lambda: others[0], clock=lambda: now[0])
    assert slots() == 16
    beats.beat("w2@b", now=time.time(), stats={"concurrency": 16, "queues": CHAT})
    assert slots() == 16  # read at most every REFRESH seconds per process
    now[0] += REFRESH
    assert slots() == 32
    others[0] = False  # one endpoint selected: the jobs have nowhere else to go
    assert slots() == 0
