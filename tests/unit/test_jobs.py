"""The job store and its Lua scripts, on fakeredis with a frozen clock (conftest `clock`); the very same
tests run on a real Redis in tests/integration/real_redis/test_jobs.py."""

from __future__ import annotations

import pytest
import redis

from llmpool.jobs import JobStore, decode_event
from llmpool.keys import Keys
from tests.conftest import Clock

KEYS = Keys("t")


@pytest.fixture
def client(any_redis: redis.Redis) -> redis.Redis:
    return any_redis


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    return JobStore(client, KEYS, ttl=100, stream_ttl=50)


def test_create_is_idempotent(store: JobStore) -> None:
    assert store.create("j1", queue="chat.high", deadline=123.5, summary="<s>", payload={})
    assert not store.create("j1", queue="chat.low", deadline=1.0, summary="other", payload={})
    record = store.get("j1")
    assert record is not None
    assert (record["state"], record["queue"], record["deadline"], record["attempts"]) == (
        "queued", "chat.high", 123.5, 0)
    assert 0 < store.redis.ttl(KEYS.job("j1")) <= 100


def test_claim_runs_once_then_skips_duplicates(store: JobStore) -> None:
    store.create("j1", queue="chat.default", deadline=0, summary="", payload={})
    first = store.claim("j1", worker="w1", lease=60, max_attempts=3)
    assert (first.verdict, first.attempts) == ("run", 1)
    assert store.claim("j1", worker="w2", lease=60, max_attempts=3).verdict == "busy"
    store.finish("j1", "succeeded", {"content": "x"})
    done = store.claim("j1", worker="w2", lease=60, max_attempts=3)
    assert (done.verdict, done.state) == ("done", "succeeded")


def test_expired_lease_is_taken_over_and_attempts_are_capped(store: JobStore, clock: Clock) -> None:
    assert store.claim("j2", worker="w1", lease=0.001, max_attempts=2).verdict == "run"
    clock.sleep(0.01)
    second = store.claim("j2", worker="w2", lease=0.001, max_attempts=2)
    assert (second.verdict, second.attempts) == ("run", 2)
    clock.sleep(0.01)
    third = store.claim("j2", worker="w3", lease=60, max_attempts=2)
    assert (third.verdict, third.attempts, third.claim) == ("exhausted", 2, 0)
    assert store.finish("j2", "failed", {"type": "too_many_attempts", "message": "m"})  # the task ends it
    record = store.get("j2")
    assert record is not None and record["error"]["type"] == "too_many_attempts"


def test_claim_without_a_record_creates_one(store: JobStore) -> None:
    assert store.claim("raw", worker="w1", lease=60, max_attempts=1).verdict == "run"
    record = store.get("raw")
    assert record is not None and record["state"] == "running" and record["created_at"] > 0


def test_finish_writes_state_and_end_event_together(store: JobStore) -> None:
    store.create("j3", queue="chat.default", deadline=0, summary="", payload={})
    pub = store.publisher("j3", stream_tokens=True)
    pub.token("Hel")
    pub.flush()
    pub.reset()
    pub.token("Hello")
    pub.end("succeeded", {"content": "Hello", "endpoint": "e1"})
    events = [decode_event(f) for _id, f in store.redis.xrange(KEYS.job_stream("j3"))]
    assert [e["type"] for e in events] == ["token", "reset", "token", "end"]
    assert events[-1]["data"] == {"content": "Hello", "endpoint": "e1"} and events[-1]["state"] == "succeeded"
    record = store.get("j3")
    assert record is not None and record["result"] == {"content": "Hello", "endpoint": "e1"}
    assert record["history"][-1]["event"] == "succeeded" and record["history"][-1]["endpoint"] == "e1"
    assert 0 < store.redis.ttl(KEYS.job_stream("j3")) <= 50


def test_non_streaming_jobs_write_only_the_end_event(store: JobStore) -> None:
    pub = store.publisher("j4", stream_tokens=False)
    pub.token("ignored")
    pub.reset()
    pub.end("failed", {"type": "bad_request", "message": "no"})
    events = [decode_event(f) for _id, f in store.redis.xrange(KEYS.job_stream("j4"))]
    assert [e["type"] for e in events] == ["end"]
    record = store.get("j4")
    assert record is not None and record["error"]["type"] == "bad_request"


def test_every_key_is_under_the_prefix(store: JobStore) -> None:
    store.create("j5", queue="chat.low", deadline=0, summary="", payload={})
    store.publisher("j5", stream_tokens=True).end("succeeded", {})
    assert sorted(k.decode() for k in store.redis.keys("*")) == ["t:history:j5", "t:job:j5", "t:stream:j5"]


def test_a_claim_returns_the_times_the_task_needs(store: JobStore) -> None:
    store.create("t1", queue="chat.high", deadline=4242.5, summary="", payload={})
    claim = store.claim("t1", worker="w1", lease=60, max_attempts=3)
    record = store.get("t1")
    assert record is not None and claim.verdict == "run"
    assert (claim.created_at, claim.deadline) == (record["created_at"], 4242.5)
    assert claim.started_at == record["started_at"] >= claim.created_at
    raw = store.claim("raw", worker="w1", lease=60, max_attempts=3)
    assert raw.deadline is None and raw.created_at == raw.started_at
