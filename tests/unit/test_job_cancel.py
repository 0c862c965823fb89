"""Cancelling a job: the store's script, the lease thread that stops a cancelled run, and the runner
that makes no further call; on fakeredis with a frozen clock (conftest `clock`)."""

from __future__ import annotations

import pytest
import redis

from llmpool import leases as leases_module
from llmpool.endpoints import Endpoint
from llmpool.errors import JobCancelled
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.leases import LeaseKeeper
from llmpool.runner import run_chat
from llmpool.schemas import ChatJob

KEYS = Keys("t")


@pytest.fixture
def store(any_redis: redis.Redis) -> JobStore:
    return JobStore(any_redis, KEYS, ttl=100, stream_ttl=50)


def _sets(store: JobStore, job_id: str) -> list[bool]:
    keys = (KEYS.jobs_running(), KEYS.jobs_parked(), KEYS.jobs_unpublished())
    return [store.redis.zscore(key, job_id) is not None for key in keys]


def test_cancel_says_unknown_and_final_and_changes_nothing_then(store: JobStore) -> None:
    assert store.cancel("nope") == ("unknown", "")
    assert not store.redis.exists(KEYS.job("nope"), KEYS.job_stream("nope"))
    store.create("j1", queue="chat.default", deadline=0, summary="", payload={})
    store.finish("j1", "succeeded", {"content": "x"})
    assert store.cancel("j1") == ("final", "succeeded")
    assert (store.get("j1") or {})["state"] == "succeeded"


@pytest.mark.parametrize("how", ["queued", "waiting", "running"])
def test_a_cancelled_job_is_final_out_of_every_set_and_its_stream_ended(store: JobStore, how: str) -> None:
    store.create("j1", queue="chat.default", deadline=0, summary="", payload={"messages": []})
    claim = store.claim("j1", worker="w1", lease=60, max_attempts=3) if how != "queued" else None
    if how == "waiting":
        assert claim is not None and store.park("j1", claim=claim.claim, delay=5, calls=0, history=[])
    assert store.cancel("j1") == ("cancelled", how)
    record = store.get("j1") or {}
    assert (record["state"], record["error"]["type"]) == ("cancelled", "cancelled")
    assert record["history"][-1]["event"] == "cancelled"
    assert _sets(store, "j1") == [False, False, False]
    events = list(store.events("j1", until=1e12))
    assert (events[-1]["type"], events[-1]["state"]) == ("end", "cancelled")
    assert store.claim("j1", worker="w2", lease=60, max_attempts=3).verdict == "done"  # its message, if it comes
    assert store.recover(limit=10, republish_grace=0) == []
    if claim is not None:  # the run that held it loses it, and cannot finish it any more
        assert store.renew({"j1": claim.claim}, lease=60) == {"j1"}
        assert not store.finish("j1", "succeeded", {"content": "late"}, claim=claim.claim)
    assert store.cancelled(["j1", "other"]) == {"j1"}


class _Call:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_the_lease_thread_stops_a_cancelled_run_and_ends_its_calls(store: JobStore) -> None:
    leases = LeaseKeeper(store, lease=60, wait=lambda seconds: True)  # no thread: the test drives it
    for job_id in ("j1", "j2"):
        store.create(job_id, queue="chat.default", deadline=0, summary="", payload={})
    publishers = {j: store.publisher(j, stream_tokens=True, claim=store.claim(j, worker="w", lease=60,
                                                                              max_attempts=3).claim)
                  for j in ("j1", "j2")}
    calls = {j: _Call() for j in publishers}
    for job_id, publisher in publishers.items():
        leases.hold(job_id, publisher)
        publisher.watch(calls[job_id])
    assert leases.stop_cancelled() == set()
    store.cancel("j1")
    assert leases.stop_cancelled() == {"j1"}
    assert calls["j1"].cancelled and not calls["j2"].cancelled
    assert publishers["j1"].cancelled and publishers["j1"].lost and not publishers["j2"].lost
    late = _Call()
    publishers["j1"].watch(late)  # a call that starts after the cancel is ended at once
    assert late.cancelled
    assert leases.stop_cancelled() == set()  # told once


def test_a_cancelled_run_makes_no_call(store: JobStore) -> None:
    store.create("j1", queue="chat.default", deadline=0, summary="", payload={})
    publisher = store.publisher("j1", stream_tokens=True, claim=1)
    publisher.stop()
    endpoint = Endpoint(id="e1", chat_url="http://127.0.0.1:9/v1/chat/completions", model="m", model_name="m",
                        source="discovered")
    job = ChatJob.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(JobCancelled):
        run_chat(job, job_id="j1", candidates=[endpoint], client=None,  # type: ignore[arg-type]
                 publisher=publisher, deadline=1e12, max_calls=3)


def test_past_a_batch_of_held_jobs_each_look_takes_the_next_batch(store: JobStore, monkeypatch) -> None:  # noqa: ANN001
    """A worker holding thousands of jobs looks at CANCEL_BATCH of them per look, in turn: each is seen."""
    monkeypatch.setattr(leases_module, "CANCEL_BATCH", 2)
    leases = LeaseKeeper(store, lease=60, wait=lambda seconds: True)
    jobs = [f"j{n}" for n in range(5)]
    for job_id in jobs:
        store.create(job_id, queue="chat.default", deadline=0, summary="", payload={})
        leases.hold(job_id, store.publisher(job_id, stream_tokens=True, claim=store.claim(
            job_id, worker="w", lease=60, max_attempts=3).claim))
    for job_id in jobs:
        store.cancel(job_id)
    seen = [leases.stop_cancelled() for _ in range(3)]
    assert seen == [{"j0", "j1"}, {"j2", "j3"}, {"j4"}]  # the first look after the cancels found two
