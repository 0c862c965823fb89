"""run_chat's decisions, with a scripted client: which endpoint answers, what ends the job."""

from __future__ import annotations

import time

import fakeredis
import pytest

from llmpool.completion import Completion
from llmpool.endpoints import Endpoint
from llmpool.errors import (
    AllEndpointsFailed,
    BadRequest,
    EndpointUnreachable,
    JobExpired,
    LLMPoolError,
    NoLLMAvailable,
    StreamCut,
)
from llmpool.jobs import JobStore, decode_event
from llmpool.keys import Keys
from llmpool.llm_client import CallOutcome
from llmpool.runner import run_chat
from llmpool.schemas import parse_job

JOB = parse_job({"messages": [{"role": "user", "content": "q"}], "stream": True})


def ep(name: str) -> Endpoint:
    return Endpoint(id=name, chat_url=f"http://{name}/v1/chat/completions", model=f"m-{name}",
                    model_name=name, source="local")


class ScriptedClient:
    """Answers per endpoint id: a text, or an error to raise after emitting some tokens."""

    def __init__(self, script: dict[str, str | tuple[LLMPoolError, list[str]]]) -> None:
        self.script = script
        self.calls: list[str] = []

    def chat(self, endpoint, job, *, budget, on_token):  # noqa: ANN001 - same shape as LLMClient
        self.calls.append(endpoint.id)
        step = self.script[endpoint.id]
        if isinstance(step, tuple):
            error, tokens = step
            for token in tokens:
                if token == "<pause>":
                    time.sleep(0.06)  # past the publisher's 50 ms batch: what came before is out
                    continue
                on_token(token)
            raise error
        on_token(step)
        done = Completion(content=step, finish_reason="stop", pieces=1,
                          usage={"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4})
        return CallOutcome(done, ttft=0.1, total=0.5)


@pytest.fixture
def store() -> JobStore:
    return JobStore(fakeredis.FakeRedis(), Keys("t"), ttl=60, stream_ttl=60)


def run(store: JobStore, client: ScriptedClient, names: list[str], **kw):  # noqa: ANN201
    publisher = store.publisher("j", stream_tokens=True)
    options = {"deadline": time.time() + 60, "max_calls": 3, **kw}
    return run_chat(JOB, candidates=[ep(n) for n in names], client=client,  # type: ignore[arg-type]
                    publisher=publisher, **options), publisher


def test_first_endpoint_answers(store: JobStore) -> None:
    client = ScriptedClient({"a": "hi", "b": "unused"})
    (result, report), _ = run(store, client, ["a", "b"])
    assert (result.content, result.endpoint, result.attempts) == ("hi", "a", 1)
    assert result.timings.tpot == pytest.approx(0.2)
    assert client.calls == ["a"] and report.failures == []


def test_retryable_failure_moves_to_the_next_endpoint_and_resets_the_stream(store: JobStore) -> None:
    cut = StreamCut("cut", endpoint="a")
    client = ScriptedClient({"a": (cut, ["<pause>", "par", "tial"]), "b": "whole"})
    (result, report), publisher = run(store, client, ["a", "b"])
    publisher.flush()
    assert (result.endpoint, result.attempts) == ("b", 2)
    assert [f["type"] for f in report.failures] == ["stream_cut"]
    events = [decode_event(f) for _i, f in store.redis.xrange(store.keys.job_stream("j"))]
    assert [(e["type"], e.get("text")) for e in events] == [
        ("token", "par"), ("reset", None), ("token", "whole")]


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
