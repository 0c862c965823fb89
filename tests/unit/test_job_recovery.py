"""Leases, parking, fencing and the sweep's recovery step of the job store, on fakeredis with a frozen
clock (conftest `clock`); tests/integration/real_redis/test_job_recovery.py runs them on a real Redis."""

from __future__ import annotations

import pytest
import redis

from llmpool.jobs import JobStore
from llmpool.keys import Keys
from tests.conftest import Clock

KEYS = Keys("t")
PAYLOAD = {"messages": [{"role": "user", "content": "hi"}], "priority": "high"}


@pytest.fixture
def store(any_redis: redis.Redis) -> JobStore:
    return JobStore(any_redis, KEYS, ttl=100, stream_ttl=50)


def _submitted(store: JobStore, job_id: str) -> None:
    assert store.create(job_id, queue="chat.high", deadline=0, summary="", payload=PAYLOAD)
    store.published(job_id)


def test_a_parked_job_comes_back_to_its_own_queue_when_due(store: JobStore, clock: Clock) -> None:
    _submitted(store, "p1")
    claim = store.claim("p1", worker="w1", lease=30, max_attempts=3)
    with clock.within(0.05):
        assert store.park("p1", claim=claim.claim, delay=0.05, calls=2, history=[{"event": "refused"}])
        assert store.recover(limit=10, republish_grace=60) == []  # not due yet
    record = store.get("p1")
    assert record is not None and (record["state"], record["attempts"], record["calls"]) == ("waiting", 0, 2)
    clock.sleep(0.1)
    [back] = store.recover(limit=10, republish_grace=60)
    assert (back.job_id, back.queue, back.payload, back.why) == ("p1", "chat.high", PAYLOAD, "due")
    assert store.counts() == {"running": 0, "parked": 0, "unpublished": 1}  # until its publish is confirmed
    store.published("p1")
    again = store.claim("p1", worker="w2", lease=30, max_attempts=3)
    assert (again.verdict, again.calls, again.claim) == ("run", 2, 2)  # one call budget across runs


def test_a_lapsed_lease_is_an_orphan_and_a_renewed_one_is_not(store: JobStore, clock: Clock) -> None:
    _submitted(store, "a")
    _submitted(store, "b")
    with clock.within(0.05):  # renewed inside its first lease
        a = store.claim("a", worker="dead", lease=0.05, max_attempts=3)
        b = store.claim("b", worker="alive", lease=0.05, max_attempts=3)
        assert store.renew({"b": b.claim}, lease=30) == set()
    clock.sleep(0.1)
    recovered = store.recover(limit=10, republish_grace=60)
    assert [(r.job_id, r.why) for r in recovered] == [("a", "lease_lapsed")]
    assert store.get("a")["state"] == "queued"  # type: ignore[index]
    assert store.get("b")["state"] == "running"  # type: ignore[index]
    assert a.claim == 1


def test_a_run_that_lost_its_job_can_no_longer_change_it(store: JobStore, clock: Clock) -> None:
    _submitted(store, "f")
    old = store.claim("f", worker="w1", lease=0.05, max_attempts=3)
    clock.sleep(0.1)
    store.recover(limit=10, republish_grace=60)
    new = store.claim("f", worker="w2", lease=30, max_attempts=3)
    assert store.renew({"f": old.claim}, lease=30) == {"f"}
    assert not store.finish("f", "succeeded", {"content": "zombie"}, claim=old.claim)
    assert not store.park("f", claim=old.claim, delay=1, calls=1, history=[])
    assert store.finish("f", "succeeded", {"content": "real"}, claim=new.claim)
    record = store.get("f")
    assert record is not None and record["result"] == {"content": "real"}
    assert [h["event"] for h in record["history"]] == ["claimed", "lease_lapsed", "claimed", "succeeded"]
    assert store.claim("f", worker="w3", lease=30, max_attempts=3).verdict == "done"
    assert store.counts() == {"running": 0, "parked": 0, "unpublished": 0}


def test_a_job_whose_publish_was_never_confirmed_is_published_again(store: JobStore) -> None:
    assert store.create("u", queue="chat.low", deadline=0, summary="", payload=PAYLOAD)
    assert store.recover(limit=10, republish_grace=60) == []  # within the grace: the publish may be under way
    [again] = store.recover(limit=10, republish_grace=0)
    assert (again.job_id, again.queue, again.why) == ("u", "chat.low", "unpublished")
    store.published("u")
    assert store.recover(limit=10, republish_grace=0) == []


def test_abandon_undoes_only_an_unclaimed_submit(store: JobStore) -> None:
    assert store.create("x", queue="chat.low", deadline=0, summary="", payload=PAYLOAD)
    assert store.abandon("x") and store.get("x") is None
    assert store.create("x", queue="chat.low", deadline=0, summary="", payload=PAYLOAD)  # a retry submits afresh
    store.claim("x", worker="w1", lease=30, max_attempts=3)
    assert not store.abandon("x") and store.get("x") is not None


def test_a_finished_job_leaves_no_recovery_entry_and_no_payload(store: JobStore) -> None:
    _submitted(store, "d")
    claim = store.claim("d", worker="w1", lease=30, max_attempts=3)
    assert store.finish("d", "failed", {"type": "bad_request", "message": "no"}, claim=claim.claim, calls=1)
    raw = store.redis.hgetall(KEYS.job("d"))
    assert b"payload" not in raw and b"lease_until" not in raw
    assert store.counts() == {"running": 0, "parked": 0, "unpublished": 0}
    duplicate = store.claim("d", worker="w2", lease=30, max_attempts=3)
    assert (duplicate.verdict, duplicate.state) == ("done", "failed")
