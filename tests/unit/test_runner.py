"""run_chat's decisions, with a scripted client: which endpoint answers, what ends the job.

The publisher batches tokens for 50 ms (llmpool.jobs.FLUSH_INTERVAL) by the clock llmpool.jobs
reads; here that is the test's frozen clock, so a batch ends exactly where the script pauses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
import redis

import llmpool.jobs
from api.routes.chat import _text_stream
from llmpool.completion import Completion
from llmpool.endpoints import Endpoint
from llmpool.errors import (
    AllEndpointsFailed,
    BadRequest,
    EndpointStarting,
    EndpointUnreachable,
    IncompleteAnswer,
    JobExpired,
    LLMPoolError,
    NoFreeConnection,
    NoLLMAvailable,
    RateLimited,
    Refused,
    RequestTimeout,
    ResponseTooLarge,
    ServerError,
    StreamCut,
)
from llmpool.jobs import JobStore, decode_event
from llmpool.keys import Keys
from llmpool.llm_client import CallOutcome
from llmpool.runner import SHORTAGE_WAIT, STARTING_PAUSE, RunReport, estimate_tokens, run_chat
from llmpool.schemas import parse_job
from tests.conftest import FrozenClock

JOB = parse_job({"messages": [{"role": "user", "content": "q"}], "stream": True})


def ep(name: str) -> Endpoint:
    return Endpoint(id=name, chat_url=f"http://{name}/v1/chat/completions", model=f"m-{name}",
                    model_name=name, source="local")


class ScriptedClient:
    """Answers per endpoint id: a text, or an error to raise after emitting some tokens."""

    def __init__(self, script: dict[str, str | tuple[LLMPoolError, list[str]]],
                 pause: Callable[[float], None] | None = None) -> None:
        self.script = script
        self.pause = pause  # how a "<pause>" token waits
        self.calls: list[str] = []

    def chat(self, endpoint, job, *, budget, on_token, **_options):  # noqa: ANN001, ANN003 - same shape as LLMClient
        self.calls.append(endpoint.id)
        step = self.script[endpoint.id]
        if isinstance(step, tuple):
            error, tokens = step
            for token in tokens:
                if token == "<pause>":
                    assert self.pause is not None
                    self.pause(0.06)  # past the publisher's 50 ms batch: what came before is out
                    continue
                on_token(token)
            raise error
        on_token(step)
        done = Completion(content=step, finish_reason="stop", pieces=1,
                          usage={"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4})
        return CallOutcome(done, ttft=0.1, total=0.5)


class _BatchTime(ModuleType):
    """The `time` module as llmpool.jobs sees it: monotonic time is the frozen clock's."""

    def __init__(self, clock: FrozenClock) -> None:
        super().__init__("time")
        self._clock = clock

    def monotonic(self) -> float:
        return self._clock.time()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def store(any_redis: redis.Redis, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> JobStore:
    monkeypatch.setattr(llmpool.jobs, "time", _BatchTime(clock))
    return JobStore(any_redis, Keys("t"), ttl=60, stream_ttl=60)


def run(store: JobStore, client: ScriptedClient, names: list[str], **kw):  # noqa: ANN201
    publisher = store.publisher("j", stream_tokens=True)
    publisher.flush()  # nothing to write yet: it starts the publisher's first batch on the frozen clock
    options = {"deadline": time.time() + 60, "max_calls": 3, **kw}
    return run_chat(JOB, job_id="j", candidates=[ep(n) for n in names], client=client,  # type: ignore[arg-type]
                    publisher=publisher, **options), publisher


def test_first_endpoint_answers(store: JobStore) -> None:
    client = ScriptedClient({"a": "hi", "b": "unused"})
    (result, report), _ = run(store, client, ["a", "b"])
    assert (result.content, result.endpoint, result.attempts) == ("hi", "a", 1)
    assert result.timings.tpot == pytest.approx(0.2)
    assert client.calls == ["a"] and report.failures == []


def test_retryable_failure_moves_to_the_next_endpoint_and_resets_the_stream(
    store: JobStore, clock: FrozenClock
) -> None:
    cut = StreamCut("cut", endpoint="a")
    client = ScriptedClient({"a": (cut, ["<pause>", "par", "tial"]), "b": "whole"}, pause=clock.sleep)
    (result, report), publisher = run(store, client, ["a", "b"])
    publisher.flush()
    assert (result.endpoint, result.attempts) == ("b", 2)
    assert [f["type"] for f in report.failures] == ["stream_cut"]
    events = [decode_event(f) for _i, f in store.redis.xrange(store.keys.job_stream("j"))]
    assert [(e["type"], e.get("text")) for e in events] == [
        ("token", "par"), ("reset", None), ("token", "whole")]


def test_an_incomplete_answer_fails_over_and_counts_against_its_endpoint(store: JobStore) -> None:
    client = ScriptedClient({"a": (IncompleteAnswer("[DONE] without finish_reason", endpoint="a"), ["par"]),
                             "b": "whole"})
    (result, report), _ = run(store, client, ["a", "b"])
    assert (result.endpoint, result.content) == ("b", "whole")
    assert [f["type"] for f in report.failures] == ["incomplete_answer"]


def test_an_incomplete_answer_with_nowhere_else_to_go_waits_for_its_endpoint(store: JobStore) -> None:
    client = ScriptedClient({"a": (IncompleteAnswer("[DONE] without finish_reason", endpoint="a"), ["par"])})
    with pytest.raises(Refused) as refused:  # the task parks it; the same endpoint takes it again later
        run(store, client, ["a"])
    assert [r["reason"] for r in refused.value.details["refusals"]] == ["incomplete_answer"]
    with pytest.raises(AllEndpointsFailed):  # its calls used up: a failure, not an endless wait
        run(store, client, ["a"], max_calls=1)


def test_tokens_never_published_need_no_reset(store: JobStore) -> None:
    client = ScriptedClient({"a": (StreamCut("cut", endpoint="a"), ["par"]), "b": "whole"})
    (result, _report), publisher = run(store, client, ["a", "b"])
    publisher.flush()
    events = [decode_event(f) for _i, f in store.redis.xrange(store.keys.job_stream("j"))]
    assert [(e["type"], e.get("text")) for e in events] == [("token", "whole")]


def test_callers_error_ends_the_job_without_trying_others(store: JobStore) -> None:
    client = ScriptedClient({"a": (BadRequest("bad"), []), "b": "unused"})
    with pytest.raises(BadRequest):
        run(store, client, ["a", "b"])
    assert client.calls == ["a"]


def test_all_failed_names_each_endpoint(store: JobStore) -> None:
    client = ScriptedClient({n: (EndpointUnreachable(f"cannot connect to {n}"), []) for n in "abcd"})
    with pytest.raises(AllEndpointsFailed) as caught:
        run(store, client, ["a", "b", "c", "d"], max_calls=3)
    assert client.calls == ["a", "b", "c"]  # the call budget, not the candidate count
    assert "cannot connect to a" in caught.value.message and "cannot connect to c" in caught.value.message
    assert [f["endpoint"] for f in caught.value.details["failures"]] == ["a", "b", "c"]


def test_no_candidates_means_no_llm(store: JobStore) -> None:
    with pytest.raises(NoLLMAvailable):
        run(store, ScriptedClient({}), [])


def test_passed_deadline_calls_nothing(store: JobStore) -> None:
    client = ScriptedClient({"a": "hi"})
    with pytest.raises(JobExpired):
        run(store, client, ["a"], deadline=time.time() - 1)
    assert client.calls == []


@dataclass(frozen=True)
class Ticket:
    allowed: bool
    reason: str = "ok"
    retry_after: float = 0.0
    trial: bool = False


class ScriptedGate:
    """Refuses the endpoints it is told to, and records every settlement and pause."""

    def __init__(self, refuse: dict[str, tuple[str, float]] | None = None) -> None:
        self.refuse = refuse or {}
        self.settled: list[tuple[str, str, int | None]] = []
        self.paused: list[tuple[str, float]] = []

    def admit(self, endpoint, job_id, *, tokens, budget, fallback=False):  # noqa: ANN001, ANN201
        if endpoint.id in self.refuse:
            reason, after = self.refuse[endpoint.id]
            return Ticket(False, reason, after)
        return Ticket(True)

    def settle(self, endpoint, job_id, ticket, *, outcome, reserved, used, duration):  # noqa: ANN001, ANN201
        assert ticket.allowed and reserved > 0 and duration >= 0
        self.settled.append((endpoint.id, outcome, used))

    def pause(self, endpoint, seconds):  # noqa: ANN001, ANN201
        self.paused.append((endpoint.id, seconds))

    def first_token(self, endpoint, job_id, seconds):  # noqa: ANN001, ANN201
        return None


def test_refused_endpoints_are_skipped_without_a_call(store: JobStore) -> None:
    client = ScriptedClient({"a": "unused", "b": "from b"})
    gate = ScriptedGate({"a": ("open", 2.0)})
    (result, report), _ = run(store, client, ["a", "b"], gate=gate)
    assert result.endpoint == "b" and client.calls == ["b"]
    assert report.refusals == [{"endpoint": "a", "reason": "open", "retry_after": 2.0}]
    assert gate.settled == [("b", "success", 4)]  # settled with the real usage


def test_every_endpoint_refusing_says_when_to_come_back(store: JobStore) -> None:
    gate = ScriptedGate({"a": ("concurrency", 0.7), "b": ("rpm", 0.2)})
    with pytest.raises(Refused) as caught:
        run(store, ScriptedClient({}), ["a", "b"], gate=gate)
    assert caught.value.retry_after == 0.2


def test_failures_charge_the_endpoint_and_callers_errors_do_not(store: JobStore) -> None:
    gate = ScriptedGate()
    client = ScriptedClient({"a": (ServerError("HTTP 500"), []), "b": (BadRequest("bad"), []), "c": "unused"})
    with pytest.raises(BadRequest):
        run(store, client, ["a", "b", "c"], gate=gate)
    assert gate.settled == [("a", "failure", None), ("b", "neutral", None)]


def test_a_429_pauses_the_endpoint_for_its_retry_after(store: JobStore) -> None:
    gate = ScriptedGate()
    client = ScriptedClient({"a": (RateLimited("slow down", retry_after=7.0), []), "b": "ok"})
    (result, _report), _ = run(store, client, ["a", "b"], gate=gate)
    assert result.endpoint == "b" and gate.paused == [("a", 7.0)]
    assert gate.settled[0] == ("a", "failure", None)


def test_token_estimate_covers_prompt_and_max_tokens() -> None:
    job = parse_job({"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50})
    assert estimate_tokens(job, 2048) == 100 + 4 + 2048


def test_no_free_connection_of_ours_charges_nothing_costs_no_call_and_the_job_waits(store: JobStore) -> None:
    gate = ScriptedGate()
    client = ScriptedClient({"a": (NoFreeConnection("no free connection", endpoint="a"), []), "b": "unused"})
    report = RunReport()
    with pytest.raises(Refused) as caught:
        run(store, client, ["a", "b"], gate=gate, report=report)
    assert client.calls == ["a"]  # b would meet the same empty pool: the run stops at once
    assert gate.settled == [("a", "neutral", 0)]  # no failure on a's breaker; its reserved tokens go back
    assert report.calls == 0 and report.failures == []
    assert caught.value.details["refusals"] == [
        {"endpoint": "a", "reason": "no_free_connection", "retry_after": SHORTAGE_WAIT}]
    assert caught.value.retry_after == SHORTAGE_WAIT


@pytest.mark.parametrize("error", [RequestTimeout("too slow", endpoint="a"),
                                   ResponseTooLarge("too big", endpoint="a")])
def test_a_call_over_its_bounds_is_the_endpoints_failure_and_fails_over(store: JobStore,
                                                                         error: LLMPoolError) -> None:
    gate = ScriptedGate()
    client = ScriptedClient({"a": (error, ["par"]), "b": "whole"})
    (result, report), _ = run(store, client, ["a", "b"], gate=gate)
    assert (result.endpoint, result.content) == ("b", "whole")
    assert [f["type"] for f in report.failures] == [error.code]
    assert gate.settled[0] == ("a", "failure", None)


def test_a_loading_endpoint_is_paused_charged_nothing_and_the_job_moves_on(store: JobStore) -> None:
    gate = ScriptedGate()
    client = ScriptedClient({"a": (EndpointStarting("a answered HTTP 503: loading model", endpoint="a"), []),
                             "b": "from b"})
    (result, report), _ = run(store, client, ["a", "b"], gate=gate)
    assert result.endpoint == "b" and client.calls == ["a", "b"]
    assert gate.settled == [("a", "neutral", 0), ("b", "success", 4)]  # no failure on a's breaker
    assert gate.paused == [("a", STARTING_PAUSE)]
    assert report.failures == [] and report.failovers == [] and report.calls == 1 and result.attempts == 1


def test_a_loading_endpoint_with_nowhere_else_to_go_makes_the_job_wait(store: JobStore) -> None:
    gate = ScriptedGate()
    client = ScriptedClient({"a": (EndpointStarting("loading model", endpoint="a", retry_after=4.0), [])})
    report = RunReport()
    with pytest.raises(Refused) as caught:
        run(store, client, ["a"], gate=gate, report=report, max_calls=1)  # not one of its calls: it may wait
    assert caught.value.retry_after == 4.0 and gate.paused == [("a", 4.0)]
    assert gate.settled == [("a", "neutral", 0)] and report.calls == 0 and report.failures == []


def _rendered(store: JobStore) -> str:
    """The job's stream as the text-stream route renders it (api/routes/chat.py)."""
    events = [decode_event(f) for _i, f in store.redis.xrange(store.keys.job_stream("j"))]

    async def render() -> str:
        async def rest() -> Any:
            for event in events[1:]:
                yield event
        return "".join([piece async for piece in _text_stream(events[0], rest())])
    return asyncio.run(render())


def test_a_run_after_one_that_failed_over_mid_answer_shows_one_reset(store: JobStore, clock: FrozenClock) -> None:
    cut = IncompleteAnswer("[DONE] without finish_reason", endpoint="a")
    with pytest.raises(Refused):  # run 1: a partial answer, then [RESET] from the failed call; the job waits
        run(store, ScriptedClient({"a": (cut, ["<pause>", "par", "<pause>", "tial"])}, pause=clock.sleep), ["a"])
    publisher = store.publisher("j", stream_tokens=True, claim=2)  # run 2, as workers/chat_task.py starts it
    publisher.restart()
    run_chat(JOB, job_id="j", candidates=[ep("a")], client=ScriptedClient({"a": "whole"}),  # type: ignore[arg-type]
             publisher=publisher, deadline=time.time() + 60, max_calls=3)
    publisher.flush()
    assert _rendered(store) == "partial\n[RESET]\nwhole"


def test_a_run_after_one_that_died_mid_answer_shows_one_reset(store: JobStore) -> None:
    store.append_events("j", [{"type": "token", "text": "half"}])  # run 1 streamed, then its worker died
    for claim in (2, 3):  # run 2 dies before any token: run 3 has no partial answer left to discard
        store.publisher("j", stream_tokens=True, claim=claim).restart()
    store.append_events("j", [{"type": "token", "text": "whole"}])
    assert _rendered(store) == "half\n[RESET]\nwhole"
