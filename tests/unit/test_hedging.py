"""Hedged calls: the race between a job's stalled call and its hedge, with fake endpoints in threads.

Each fake endpoint either answers (after a wait), fails, or stalls until cancelled or its own
first-token wait runs out. Waits are events, not sleeps: a stalled call ends the moment its cancel
lands, and the tests assert on what happened (who answered, what was settled how, what the stream
holds), never on how fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

from llmpool.completion import Completion
from llmpool.endpoints import Endpoint
from llmpool.errors import AllEndpointsFailed, CallCancelled, EndpointStarting, FirstTokenTimeout, ServerError
from llmpool.hedge_pool import HedgePool
from llmpool.hedging import Hedging, hedging_status
from llmpool.http_deadline import CallCancel
from llmpool.jobs import EventPublisher, JobStore, decode_event
from llmpool.keys import Keys
from llmpool.llm_client import CallOutcome
from llmpool.runner import Outcome, RunReport, run_chat
from llmpool.schemas import parse_job
from llmpool.settings import load_settings

JOB = parse_job({"messages": [{"role": "user", "content": "q"}], "stream": True})
HEDGE_DELAY = 0.05
NEVER = 10.0  # a stalled call's bound in these tests: reaching it means a cancel never landed


def ep(name: str) -> Endpoint:
    return Endpoint(id=name, chat_url=f"http://{name}/v1/chat/completions", model=f"m-{name}",
                    model_name=name, source="local")


@dataclass
class Behaviour:
    """What a fake endpoint does: wait `wait` s (or until cancelled), then answer, fail, or time out."""

    wait: float = 0.0
    answer: str | None = "answer"
    error: Exception | None = None


class FakeEndpoints:
    """LLMClient's shape: each call plays its endpoint's Behaviour; records how each call ended."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.calls: list[str] = []
        self.ended: dict[str, str] = {}  # endpoint -> answered | cancelled | failed
        self.started = {name: threading.Event() for name in behaviours}

    def chat(self, endpoint, job, *, budget, on_token, cancel: CallCancel | None = None, **_options):  # noqa: ANN001, ANN003
        self.calls.append(endpoint.id)
        self.started[endpoint.id].set()
        plan = self.behaviours[endpoint.id]
        if cancel is not None and cancel.wait(plan.wait):
            self.ended[endpoint.id] = "cancelled"
            raise CallCancelled("cancelled", endpoint=endpoint.id)
        if cancel is None:
            time.sleep(plan.wait)
        if plan.error is not None:
            self.ended[endpoint.id] = "failed"
            raise plan.error
        assert plan.answer is not None
        for word in plan.answer.split():
            on_token(word + " ")
        self.ended[endpoint.id] = "answered"
        done = Completion(content=plan.answer, finish_reason="stop", pieces=len(plan.answer.split()),
                          usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
        return CallOutcome(done, ttft=plan.wait, total=plan.wait)


@dataclass(frozen=True)
class Ticket:
    allowed: bool = True
    trial: bool = False
    reason: str = "ok"
    retry_after: float = 0.0


@dataclass
class RecordingGate:
    """Admits all but `refuse`; records every settlement as (endpoint, outcome)."""

    refuse: set[str] = field(default_factory=set)
    trials: set[str] = field(default_factory=set)  # endpoints whose admission hands out the half-open trial
    admitted: list[str] = field(default_factory=list)
    settled: list[tuple[str, Outcome]] = field(default_factory=list)

    def admit(self, endpoint: Endpoint, job_id: str, *, tokens: int, budget: float, fallback: bool = False) -> Ticket:
        if endpoint.id in self.refuse:
            return Ticket(allowed=False, reason="concurrency", retry_after=1.0)
        self.admitted.append(endpoint.id)
        return Ticket(trial=endpoint.id in self.trials)

    def settle(self, endpoint: Endpoint, job_id: str, ticket: Ticket, *, outcome: Outcome, reserved: int,
               used: int | None, duration: float) -> None:
        self.settled.append((endpoint.id, outcome))

    def pause(self, endpoint: Endpoint, seconds: float) -> None:
        return None


@pytest.fixture
def pool() -> Iterator[HedgePool]:
    hedges = HedgePool(2)
    yield hedges
    hedges.close()


@pytest.fixture
def store(any_redis: redis.Redis) -> JobStore:
    return JobStore(any_redis, Keys("t"), ttl=60, stream_ttl=60)


def hedged_run(store: JobStore, pool: HedgePool, client: FakeEndpoints, gate: RecordingGate, *,
               max_calls: int = 3, names: tuple[str, ...] = ("a", "b")):  # noqa: ANN201
    publisher = store.publisher("j", stream_tokens=True)
    hedging = Hedging(pool=pool, min_delay=HEDGE_DELAY, cold_delay=HEDGE_DELAY, ceiling=60)
    report = RunReport()
    try:
        result, _ = run_chat(JOB, job_id="j", candidates=[ep(n) for n in names], client=client,  # type: ignore[arg-type]
                             publisher=publisher, deadline=time.time() + 60, max_calls=max_calls, gate=gate,
                             report=report, hedging=hedging)
    finally:
        publisher.flush()
    return result, report, publisher


def stream(publisher: EventPublisher) -> list[dict[str, str]]:
    entries = publisher.store.redis.xrange(publisher.store.stream_key("j"))
    return [decode_event(fields) for _, fields in entries]


def test_a_stalled_call_is_hedged_the_hedge_answers_and_the_stalled_one_is_cancelled_neutrally(
    store: JobStore, pool: HedgePool
) -> None:
    client = FakeEndpoints({"a": Behaviour(wait=NEVER, error=FirstTokenTimeout("a", endpoint="a")),
                            "b": Behaviour(answer="from b")})
    gate = RecordingGate()
    result, report, publisher = hedged_run(store, pool, client, gate)
    assert (result.endpoint, result.content) == ("b", "from b")
    assert client.ended == {"a": "cancelled", "b": "answered"}
    assert sorted(gate.settled) == [("a", "neutral"), ("b", "success")]  # the loser is nobody's failure
    assert report.calls == 2 and report.failures == []  # the hedge is one of the job's calls
    assert report.hedges == [{"event": "hedge", "state": "sent", "delay": HEDGE_DELAY, "from": "a",
                              "endpoint": "b", "won": True}]
    events = stream(publisher)
    assert [e["type"] for e in events] == ["token"] * len(events)  # no reset: the loser published nothing
    assert "".join(e["text"] for e in events) == "from b "


def test_the_first_call_answering_first_cancels_the_hedge(store: JobStore, pool: HedgePool) -> None:
    client = FakeEndpoints({"a": Behaviour(wait=0.3, answer="from a"), "b": Behaviour(wait=NEVER)})
    gate = RecordingGate()
    result, report, publisher = hedged_run(store, pool, client, gate)
    assert result.endpoint == "a"
    assert client.started["b"].is_set()  # the hedge went out while a was silent
    deadline = time.monotonic() + 5
    while "b" not in client.ended and time.monotonic() < deadline:  # the hedge thread ends on its own
        time.sleep(0.01)
    assert client.ended == {"a": "answered", "b": "cancelled"}
    assert sorted(gate.settled) == [("a", "success"), ("b", "neutral")]
    assert report.hedges[0]["won"] is False
    assert "".join(e["text"] for e in stream(publisher)) == "from a "


def test_a_trial_call_is_not_hedged_it_decides(store: JobStore, pool: HedgePool) -> None:
    """The half-open trial must end on its own: a hedge cancelling it would leave the breaker undecided."""
    client = FakeEndpoints({"a": Behaviour(wait=0.3, answer="from a"), "b": Behaviour(answer="from b")})
    gate = RecordingGate(trials={"a"})
    result, report, _ = hedged_run(store, pool, client, gate)
    assert (result.endpoint, result.content) == ("a", "from a")  # waited past the hedge delay, unhedged
    assert client.calls == ["a"] and gate.settled == [("a", "success")]
    assert report.calls == 1 and report.hedges == []


def test_both_stalled_the_job_times_out_once(store: JobStore, pool: HedgePool) -> None:
    """The first call's first-token wait ends the race: the silent hedge is cancelled, not waited out."""
    client = FakeEndpoints({"a": Behaviour(wait=0.3, error=FirstTokenTimeout("a silent", endpoint="a")),
                            "b": Behaviour(wait=NEVER, error=FirstTokenTimeout("b silent", endpoint="b"))})
    gate = RecordingGate()
    with pytest.raises(AllEndpointsFailed) as failed:
        hedged_run(store, pool, client, gate, max_calls=2)
    assert [f["endpoint"] for f in failed.value.details["failures"]] == ["a"]  # one timeout, a's
    assert client.ended == {"a": "failed", "b": "cancelled"}
    assert sorted(gate.settled) == [("a", "failure"), ("b", "neutral")]


def test_a_hedge_admission_refuses_is_not_sent(store: JobStore, pool: HedgePool) -> None:
    client = FakeEndpoints({"a": Behaviour(wait=0.3, answer="from a"), "b": Behaviour()})
    gate = RecordingGate(refuse={"b"})
    result, report, _ = hedged_run(store, pool, client, gate)
    assert result.endpoint == "a"
    assert client.calls == ["a"] and gate.admitted == ["a"]
    assert report.calls == 1
    assert report.hedges == [{"event": "hedge", "state": "refused", "delay": HEDGE_DELAY, "from": "a"}]
    assert report.refusals == []  # a refused hedge is no reason to park the job


def test_no_hedge_without_a_call_left_in_the_budget(store: JobStore, pool: HedgePool) -> None:
    client = FakeEndpoints({"a": Behaviour(wait=0.3, answer="from a"), "b": Behaviour()})
    result, report, _ = hedged_run(store, pool, client, RecordingGate(), max_calls=1)
    assert result.endpoint == "a" and client.calls == ["a"]
    assert report.hedges[0]["state"] == "no_budget"


def test_no_hedge_when_every_hedge_thread_is_busy(store: JobStore) -> None:
    busy = HedgePool(1)
    release = threading.Event()
    try:
        assert busy.submit(lambda: release.wait(5)) is not None
        client = FakeEndpoints({"a": Behaviour(wait=0.3, answer="from a"), "b": Behaviour()})
        result, report, _ = hedged_run(store, busy, client, RecordingGate())
    finally:
        release.set()
        busy.close()
    assert result.endpoint == "a" and client.calls == ["a"]
    assert report.hedges[0]["state"] == "no_thread"


def test_a_call_answering_before_the_hedge_delay_leaves_no_trace(store: JobStore, pool: HedgePool) -> None:
    client = FakeEndpoints({"a": Behaviour(answer="fast"), "b": Behaviour()})
    result, report, _ = hedged_run(store, pool, client, RecordingGate())
    assert result.endpoint == "a" and client.calls == ["a"]
    assert report.hedges == [] and report.calls == 1


def test_the_first_call_failing_leaves_the_hedge_as_the_jobs_next_call(store: JobStore, pool: HedgePool) -> None:
    client = FakeEndpoints({"a": Behaviour(wait=0.2, error=ServerError("a 500", endpoint="a")),
                            "b": Behaviour(wait=0.4, answer="from b"), "c": Behaviour()})
    gate = RecordingGate()
    result, report, publisher = hedged_run(store, pool, client, gate, names=("a", "b", "c"))
    assert result.endpoint == "b"
    assert client.calls == ["a", "b"]  # b was not called a second time, c not at all
    assert [f["endpoint"] for f in report.failures] == ["a"] and report.calls == 2
    assert sorted(gate.settled) == [("a", "failure"), ("b", "success")]
    assert [e["type"] for e in stream(publisher)] == ["token", "token"]  # no reset for a's failure


def test_a_first_call_meeting_a_loading_model_is_settled_neutrally_and_is_no_call(
        store: JobStore, pool: HedgePool) -> None:
    client = FakeEndpoints({"a": Behaviour(wait=0.2, error=EndpointStarting("loading model", endpoint="a")),
                            "b": Behaviour(wait=0.4, answer="from b")})
    gate = RecordingGate()
    result, report, _publisher = hedged_run(store, pool, client, gate)
    assert result.endpoint == "b" and client.calls == ["a", "b"]
    assert sorted(gate.settled) == [("a", "neutral"), ("b", "success")]  # loading is not a's failure
    assert report.failures == [] and report.calls == 1  # the hedge's call is the job's one call
    assert [r["reason"] for r in report.refusals] == ["endpoint_starting"]


def test_without_hedging_nothing_changes(store: JobStore) -> None:
    client = FakeEndpoints({"a": Behaviour(wait=0.2, answer="from a"), "b": Behaviour()})
    publisher = store.publisher("j", stream_tokens=True)
    result, report = run_chat(JOB, job_id="j", candidates=[ep("a"), ep("b")], client=client,  # type: ignore[arg-type]
                              publisher=publisher, deadline=time.time() + 60, max_calls=3)
    assert result.endpoint == "a" and client.calls == ["a"] and report.hedges == []


def test_a_hedge_still_within_its_endpoints_usual_ttft_outlives_the_first_calls_timeout(
    store: JobStore, pool: HedgePool
) -> None:
    """The first call timed out, but the hedge's endpoint is merely slower than the delay: it answers."""

    @dataclass(frozen=True)
    class SlowBackupTicket(Ticket):
        hedge_after: float | None = None

    class Gate(RecordingGate):
        def admit(self, endpoint: Endpoint, job_id: str, *, tokens: int, budget: float,
                  fallback: bool = False) -> Ticket:
            self.admitted.append(endpoint.id)
            return SlowBackupTicket(hedge_after=None if endpoint.id == "a" else NEVER)

    client = FakeEndpoints({"a": Behaviour(wait=0.2, error=FirstTokenTimeout("a silent", endpoint="a")),
                            "b": Behaviour(wait=0.5, answer="from b")})
    gate = Gate()
    result, report, _ = hedged_run(store, pool, client, gate, max_calls=2)
    assert result.endpoint == "b" and client.ended == {"a": "failed", "b": "answered"}
    assert [f["endpoint"] for f in report.failures] == ["a"]
    assert sorted(gate.settled) == [("a", "failure"), ("b", "success")]


@pytest.mark.parametrize(("p95", "delay"), [(None, 3.0), (0.05, 1.0), (2.5, 2.5), (120.0, 60.0)],
                         ids=["cold", "floor", "p95", "ceiling"])
def test_the_hedge_delay_is_the_p95_within_its_floor_and_ceiling(p95: float | None, delay: float) -> None:
    settings = load_settings(agent_first_token_timeout=60, agent_hedge_min_delay=1)
    status = hedging_status(settings, {"ep": p95})
    assert status["cold_delay"] == 3.0  # a twentieth of the first-token timeout
    assert status["delays"] == {"ep": delay}
