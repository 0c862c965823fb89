"""The folded round trips of a job's run (issue 12): the claim that admits the first call
(job_start.lua), the finish that settles the last call and counts the run (JobStore.finish with
RunEnd), and the run's gate that holds them (llmpool.run_gate). On fakeredis with a frozen clock;
the very same tests run on a real Redis in tests/integration/real_redis/test_folded_trips.py.
"""

from __future__ import annotations

import pytest
import redis

from llmpool.admission import Admitter
from llmpool.endpoints import Endpoint
from llmpool.gate import RedisGate
from llmpool.jobs import JobStore, RunEnd
from llmpool.keys import Keys
from llmpool.run_gate import RunGate
from llmpool.scripts import send_together
from llmpool.settings import load_settings
from tests.conftest import Clock

KEYS = Keys("t")
EP = Endpoint(id="ep1", chat_url="http://x/v1/chat/completions", model="m", model_name="m", source="local")
OTHER = Endpoint(id="ep2", chat_url="http://y/v1/chat/completions", model="m", model_name="m", source="local")
SPAN = 600.0  # the default deadline span given to the script


@pytest.fixture
def client(any_redis: redis.Redis) -> redis.Redis:
    return any_redis


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    return JobStore(client, KEYS, ttl=100, stream_ttl=50)


@pytest.fixture
def gate(client: redis.Redis) -> RedisGate:
    settings = load_settings(agent_request_timeout=30, agent_lease_margin=5, agent_endpoint_max_concurrency=1)
    return RedisGate(Admitter(client, KEYS), settings)


def _claim(store: JobStore, gate: RedisGate, job_id: str, *, endpoint: Endpoint = EP, deadline: float | None = None):
    admit = gate.first_admission(endpoint, job_id, tokens=10, deadline=deadline, default_span=SPAN)
    return store.claim(job_id, worker="w1", lease=60, max_attempts=3, admit=admit)


def _lease_left(client: redis.Redis, job_id: str, clock: Clock, endpoint: Endpoint = EP) -> float | None:
    score = client.zscore(KEYS.leases(endpoint.id), job_id)
    return None if score is None else score - clock.time()


def test_a_first_run_is_claimed_and_its_call_admitted_in_one_script(
        store: JobStore, gate: RedisGate, client: redis.Redis, clock: Clock) -> None:
    store.create("j1", queue="chat.default", deadline=clock.time() + 100, summary="", payload={})
    with clock.within(1):
        claim = _claim(store, gate, "j1")
        left = _lease_left(client, "j1", clock)
    assert (claim.verdict, claim.claim) == ("run", 1)
    assert claim.admitted is not None and gate.admitted(EP, "j1", claim.admitted).allowed
    # The lease as `admit` gives it: the budget capped at the request timeout, plus the margin.
    assert left is not None and 34 <= left <= 35
    assert client.zscore(KEYS.awaiting(EP.id), "j1") is not None  # waiting for its first token, as admit does


def test_the_lease_follows_a_short_budget_and_the_jobs_own_deadline_first(
        store: JobStore, gate: RedisGate, client: redis.Redis, clock: Clock) -> None:
    store.create("j1", queue="chat.default", deadline=clock.time() + 100, summary="", payload={})
    with clock.within(1):
        _claim(store, gate, "j1", deadline=clock.time() + 10)  # the job's own deadline wins over the record's
        left = _lease_left(client, "j1", clock)
    assert left is not None and 14 <= left <= 15


def test_a_later_run_only_claims(store: JobStore, gate: RedisGate, client: redis.Redis, clock: Clock) -> None:
    store.create("j1", queue="chat.default", deadline=clock.time() + 1000, summary="", payload={})
    store.claim("j1", worker="w0", lease=1, max_attempts=3)
    clock.sleep(1.5)  # that run's lease lapsed
    claim = _claim(store, gate, "j1")
    assert (claim.verdict, claim.claim, claim.admitted) == ("run", 2, None)
    assert client.zcard(KEYS.leases(EP.id)) == 0


def test_a_duplicate_delivery_admits_nothing(store: JobStore, gate: RedisGate, client: redis.Redis,
                                             clock: Clock) -> None:
    store.create("j1", queue="chat.default", deadline=clock.time() + 1000, summary="", payload={})
    assert _claim(store, gate, "j1").verdict == "run"
    client.delete(KEYS.leases(EP.id), KEYS.awaiting(EP.id))
    again = _claim(store, gate, "j1")
    assert (again.verdict, again.admitted) == ("busy", None)
    assert client.zcard(KEYS.leases(EP.id)) == 0


def test_a_job_past_its_deadline_is_claimed_but_not_admitted(store: JobStore, gate: RedisGate,
                                                             client: redis.Redis, clock: Clock) -> None:
    store.create("j1", queue="chat.default", deadline=clock.time() - 1, summary="", payload={})
    claim = _claim(store, gate, "j1")
    assert (claim.verdict, claim.admitted) == ("run", None)
    assert client.zcard(KEYS.leases(EP.id)) == 0


def test_a_refused_first_admission_takes_nothing(store: JobStore, gate: RedisGate, client: redis.Redis,
                                                 clock: Clock) -> None:
    for job_id in ("j1", "j2"):
        store.create(job_id, queue="chat.default", deadline=clock.time() + 100, summary="", payload={})
    assert _claim(store, gate, "j1").admitted is not None  # holds the one slot (max concurrency 1)
    claim = _claim(store, gate, "j2")
    assert claim.verdict == "run" and claim.admitted is not None
    ticket = gate.admitted(EP, "j2", claim.admitted)
    assert (ticket.allowed, ticket.reason) == (False, "concurrency")
    assert client.zrange(KEYS.leases(EP.id), 0, -1) == [b"j1"]


def test_the_job_counts_only_in_the_finish_that_ends_it(store: JobStore, client: redis.Redis) -> None:
    store.create("j1", queue="chat.default", deadline=0, summary="", payload={})
    claim = store.claim("j1", worker="w1", lease=60, max_attempts=3)
    jobs, calls = KEYS.metric("jobs"), KEYS.metric("calls")
    along = RunEnd(after=[("HINCRBY", calls, "f", 1)],
                   if_ended=[("HINCRBY", jobs, "f", 1), ("HINCRBYFLOAT", jobs, "sum", 0.25)])
    assert store.finish("j1", "succeeded", {"content": "a"}, claim=claim.claim, along=along)
    assert not store.finish("j1", "failed", {"type": "x"}, along=along)  # ended already: counts nothing
    assert client.hgetall(jobs) == {b"f": b"1", b"sum": b"0.25"}
    assert client.hget(calls, "f") == b"2"  # what any run adds is added by both
    assert client.hget(KEYS.job("j1"), "state") == b"succeeded"


def test_scripts_redis_forgot_are_loaded_and_run_in_order(store: JobStore, gate: RedisGate,
                                                          client: redis.Redis, clock: Clock) -> None:
    store.create("j1", queue="chat.default", deadline=clock.time() + 100, summary="", payload={})
    claim = _claim(store, gate, "j1")
    ticket = gate.admitted(EP, "j1", claim.admitted or [])
    settled = []
    call = gate.settlement(EP, "j1", ticket, outcome="success", reserved=10, used=5, duration=0.1)
    call = type(call)(call.script, call.keys, call.args, on_reply=settled.append)
    client.script_flush()  # as after a Redis restart: every SHA is unknown
    assert store.finish("j1", "succeeded", {"content": "a"}, claim=claim.claim, along=RunEnd(before=[call]))
    assert settled and settled[0][0] in (b"closed", "closed")
    assert client.zcard(KEYS.leases(EP.id)) == 0
    assert client.hget(KEYS.job("j1"), "state") == b"succeeded"


def test_send_together_returns_errors_as_replies(client: redis.Redis) -> None:
    client.set("s", "text")
    replies = send_together(client, [("INCR", "s"), ("INCR", "n")])
    assert isinstance(replies[0], redis.ResponseError) and replies[1] == 1


def test_the_run_gate_hands_the_claims_admission_to_its_endpoint_once(
        store: JobStore, gate: RedisGate, client: redis.Redis, clock: Clock) -> None:
    store.create("j1", queue="chat.default", deadline=clock.time() + 100, summary="", payload={})
    claim = _claim(store, gate, "j1")
    first = gate.admitted(EP, "j1", claim.admitted or [])
    run = RunGate(gate, "j1", first=(EP, first), reserved=10)
    assert run.admit(EP, "j1", tokens=10, budget=50) is first
    again = run.admit(EP, "j1", tokens=10, budget=50)  # a second call: a real admission (it holds its lease)
    assert again is not first and again.allowed
    run.close()


def test_an_unused_first_admission_is_given_back(store: JobStore, gate: RedisGate, client: redis.Redis,
                                                 clock: Clock) -> None:
    store.create("j1", queue="chat.default", deadline=clock.time() + 100, summary="", payload={})
    claim = _claim(store, gate, "j1")
    run = RunGate(gate, "j1", first=(EP, gate.admitted(EP, "j1", claim.admitted or [])), reserved=10)
    assert client.zcard(KEYS.leases(EP.id)) == 1
    run.close()  # the run ended before any call (its deadline, a cancel, no candidate)
    assert client.zcard(KEYS.leases(EP.id)) == 0
    assert client.zcard(KEYS.awaiting(EP.id)) == 0


def test_a_success_is_settled_with_the_finish_and_anything_else_first(
        store: JobStore, gate: RedisGate, client: redis.Redis, clock: Clock) -> None:
    store.create("j1", queue="chat.default", deadline=clock.time() + 100, summary="", payload={})
    claim = _claim(store, gate, "j1")
    first = gate.admitted(EP, "j1", claim.admitted or [])
    run = RunGate(gate, "j1", first=(EP, first), reserved=10)
    ticket = run.admit(EP, "j1", tokens=10, budget=50)
    run.settle(EP, "j1", ticket, outcome="success", reserved=10, used=5, duration=0.1)
    assert client.zcard(KEYS.leases(EP.id)) == 1  # held back: the finish will carry it
    held = run.take()
    assert held is not None and run.take() is None
    assert store.finish("j1", "succeeded", {"content": "a"}, claim=claim.claim, along=RunEnd(before=[held]))
    assert client.zcard(KEYS.leases(EP.id)) == 0
    # A held success goes out at once when the run asks the gate anything else.
    other = run.admit(OTHER, "j1", tokens=10, budget=50)
    run.settle(OTHER, "j1", other, outcome="success", reserved=10, used=5, duration=0.1)
    assert client.zcard(KEYS.leases(OTHER.id)) == 1
    run.pause(OTHER, 0.5)
    assert client.zcard(KEYS.leases(OTHER.id)) == 0
