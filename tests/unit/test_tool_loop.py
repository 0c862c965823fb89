"""The tool loop (llmpool.tool_loop) with fake tools and a scripted LLM, its checkpoint script on
fakeredis and real Redis (JobStore.checkpoint_step), and which endpoints get tool-using jobs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import redis

import llmpool.tool_loop as tool_loop
from llmpool.endpoints import Endpoint
from llmpool.errors import InvalidJob, JobExpired, NoLLMAvailable, NoToolCapableLLM, ToolStepLimit
from llmpool.jobs import JobStore, decode_event
from llmpool.keys import Keys
from llmpool.llm_request import build_request
from llmpool.schemas import ChatJob, ChatResult, parse_job
from llmpool.settings import Settings
from llmpool.tool_endpoints import tool_capable
from llmpool.tool_job import tool_loop_endpoints
from llmpool.tool_loop import LoopState, run_tool_loop
from llmpool.tools import ToolResult

KEYS = Keys("t")


class FakeTool:
    """A tool that answers from a function of its arguments and counts its runs."""

    def __init__(self, name: str, answer: Callable[[dict[str, Any]], ToolResult], timeout: float = 5.0) -> None:
        self.name = name
        self.timeout = timeout
        self.answer = answer
        self.runs: list[dict[str, Any]] = []
        self.deadlines: list[float] = []

    def schema(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": "d",
                                                 "parameters": {"type": "object"}}}

    def run(self, arguments: dict[str, Any], *, deadline: float) -> ToolResult:
        self.runs.append(arguments)
        self.deadlines.append(deadline)
        return self.answer(arguments)


def ok(text: str) -> Callable[[dict[str, Any]], ToolResult]:
    return lambda args: ToolResult(content=text, error=None, duration=0.01, size=len(text), summary=text[:50])


def tool_call(name: str, arguments: Any, call_id: str = "c1") -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def answer(content: str = "", calls: list[dict[str, Any]] | None = None) -> ChatResult:
    return ChatResult(content=content, tool_calls=calls or [], model="m", endpoint="e")


class ScriptedLLM:
    """Answers from a list, one per call, and keeps every request it was sent."""

    def __init__(self, *answers: ChatResult) -> None:
        self.answers = list(answers)
        self.requests: list[ChatJob] = []
        self.rounds: list[int] = []

    def __call__(self, request: ChatJob, rounds: int) -> ChatResult:
        self.requests.append(request)
        self.rounds.append(rounds)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


JOB = ChatJob(messages=[{"role": "user", "content": "what is new?"}], tools="builtin")  # type: ignore[list-item]


def run(llm: ScriptedLLM, tools: dict[str, FakeTool], **kwargs: Any) -> tuple[ChatResult, list[LoopState]]:
    saved: list[LoopState] = []
    kwargs.setdefault("deadline", time.time() + 30)
    kwargs.setdefault("max_steps", 5)
    result = run_tool_loop(JOB, tools=tools, call=llm, save=lambda state, steps: saved.append(state), **kwargs)
    return result, saved


def test_search_then_answer_sends_the_result_back_and_records_the_step() -> None:
    search = FakeTool("web_search", ok("Result one: the news"))
    llm = ScriptedLLM(answer(calls=[tool_call("web_search", {"query": "news"})]), answer("The news is here"))
    result, saved = run(llm, {"web_search": search})
    assert result.content == "The news is here"
    assert search.runs == [{"query": "news"}]
    first, second = llm.requests
    assert first.tools == [search.schema()] and first.tool_choice == "auto"
    assert [m.role for m in second.messages] == ["user", "assistant", "tool"]
    assert second.messages[1].tool_calls == [tool_call("web_search", {"query": "news"})]
    assert (second.messages[2].tool_call_id, second.messages[2].content) == ("c1", "Result one: the news")
    assert len(saved) == 1 and saved[0].rounds == 1
    step = result.steps[0]
    assert (step["tool"], step["round"], step["error"], step["size"]) == ("web_search", 1, None, 20)
    assert json.loads(step["arguments"]) == {"query": "news"}


def test_tool_failure_unknown_tool_and_bad_arguments_go_back_to_the_llm() -> None:
    failing = FakeTool("run_code", lambda a: ToolResult(content="HTTP 502", error="http_error", duration=0.1,
                                                         size=8, summary="HTTP 502"))
    calls = [tool_call("run_code", {"code": "1"}, "a"), tool_call("invented", {}, "b"),
             tool_call("run_code", "{not json", "c"), tool_call("run_code", "[1, 2]", "d")]
    llm = ScriptedLLM(answer(calls=calls), answer("done anyway"))
    result, _ = run(llm, {"run_code": failing})
    assert result.content == "done anyway"
    assert failing.runs == [{"code": "1"}]  # the refused calls never ran
    assert [s["error"] for s in result.steps] == ["http_error", "unknown_tool", "bad_arguments", "bad_arguments"]
    replies = [m for m in llm.requests[1].messages if m.role == "tool"]
    assert [m.tool_call_id for m in replies] == ["a", "b", "c", "d"]
    assert replies[0].content == "[tool error: http_error] HTTP 502"
    assert "no tool named 'invented'" in str(replies[1].content) and "run_code" in str(replies[1].content)


def test_several_calls_of_one_answer_run_at_the_same_time() -> None:
    both = threading.Barrier(2)

    def meet(args: dict[str, Any]) -> ToolResult:
        both.wait(timeout=5)  # run one after the other, the first would wait here alone and break
        return ok("met")(args)

    search = FakeTool("web_search", meet)
    llm = ScriptedLLM(answer(calls=[tool_call("web_search", {"q": 1}, "a"), tool_call("web_search", {"q": 2}, "b")]),
                      answer("ok"))
    result, _ = run(llm, {"web_search": search})
    assert [s["error"] for s in result.steps] == [None, None]
    assert sorted(r["q"] for r in search.runs) == [1, 2]


def test_a_tool_that_never_returns_is_reported_as_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tool_loop, "STUCK_GRACE", 0.05)
    release = threading.Event()

    def hang(args: dict[str, Any]) -> ToolResult:
        release.wait(5)
        return ok("late")(args)

    stuck = FakeTool("run_code", hang, timeout=0.1)
    llm = ScriptedLLM(answer(calls=[tool_call("run_code", {"code": "while True: pass"})]), answer("gave up"))
    try:
        result, _ = run(llm, {"run_code": stuck})
    finally:
        release.set()
    assert result.steps[0]["error"] == "timeout"
    assert "[tool error: timeout]" in str(llm.requests[1].messages[-1].content)


def test_the_step_limit_makes_a_last_call_without_tools_then_fails_a_model_that_ignores_it() -> None:
    search = FakeTool("web_search", ok("r"))
    always = ScriptedLLM(answer(calls=[tool_call("web_search", {"q": "again"})]))
    with pytest.raises(ToolStepLimit) as failed:
        run(always, {"web_search": search}, max_steps=3)
    assert len(search.runs) == 3
    assert [r.tool_choice for r in always.requests] == ["auto", "auto", "auto", "none"]
    assert failed.value.code == "tool_step_limit"
    obeys = ScriptedLLM(*[answer(calls=[tool_call("web_search", {"q": "x"})])] * 2, answer("final words"))
    result, _ = run(obeys, {"web_search": FakeTool("web_search", ok("r"))}, max_steps=2)
    assert result.content == "final words" and obeys.requests[-1].tool_choice == "none"
    assert len(result.steps) == 2


def test_the_deadline_stops_a_loop_and_bounds_each_tool() -> None:
    now = [1000.0]
    search = FakeTool("web_search", ok("r"))

    def call(request: ChatJob, rounds: int) -> ChatResult:
        now[0] += 6  # each LLM call takes 6 s of the job's 10
        return answer(calls=[tool_call("web_search", {"q": rounds})])

    with pytest.raises(JobExpired):
        run_tool_loop(JOB, tools={"web_search": search}, call=call, save=lambda s, st: None, deadline=1010.0,
                      max_steps=5, clock=lambda: now[0])
    assert len(search.runs) == 1 and search.deadlines == [1010.0]


def test_a_resumed_loop_does_not_repeat_finished_rounds() -> None:
    search = FakeTool("web_search", ok("fresh"))
    first = ScriptedLLM(answer(calls=[tool_call("web_search", {"q": "a"})]), answer("x"))
    _, saved = run(first, {"web_search": search})
    stored = json.loads(json.dumps(saved[0].to_dict()))  # as it comes back from Redis
    again = ScriptedLLM(answer("the answer"))
    result, _ = run(again, {"web_search": search}, resume=LoopState.from_dict(stored))
    assert len(search.runs) == 1  # not run again
    assert again.rounds == [1]
    assert [m.role for m in again.requests[0].messages] == ["user", "assistant", "tool"]
    assert result.content == "the answer" and len(result.steps) == 1


@pytest.mark.parametrize("stored", [None, {}, {"messages": "x", "steps": [], "rounds": 1},
                                    {"messages": [{"role": "nobody"}], "steps": [], "rounds": 1},
                                    {"messages": [], "steps": [], "rounds": -1}])
def test_a_missing_or_malformed_checkpoint_starts_the_loop_again(stored: Any) -> None:
    assert LoopState.from_dict(stored) == LoopState()


def test_jobs_take_builtin_or_auto_tools_and_never_send_the_word_to_an_llm() -> None:
    assert parse_job({"messages": [{"role": "user", "content": "x"}], "tools": "builtin"}).tools == "builtin"
    assert parse_job({"messages": [{"role": "user", "content": "x"}], "tools": "auto"}).tools == "auto"
    with pytest.raises(InvalidJob, match="tools"):
        parse_job({"messages": [{"role": "user", "content": "x"}], "tools": "everything"})
    endpoint = Endpoint(id="e", chat_url="http://h/v1/chat/completions", model="m", model_name="m", source="local")
    body = build_request(endpoint, JOB, Settings(), stream=True).body
    assert "tools" not in body and "tool_choice" not in body


def test_which_endpoints_can_call_tools() -> None:
    def endpoint(**fields: Any) -> Endpoint:
        base: dict[str, Any] = {"id": "d1", "chat_url": "http://h/v1/chat/completions", "model": "org/M",
                                "model_name": "M", "source": "discovered"}
        return Endpoint(**{**base, **fields})

    plain = Settings()
    assert not tool_capable(endpoint(), plain)
    assert tool_capable(endpoint(tool_calling=True), plain)
    assert tool_capable(endpoint(source="openai", flavor="openai"), plain)
    assert tool_capable(endpoint(), Settings(agent_tool_endpoints="other, D1"))  # type: ignore[arg-type]
    assert tool_capable(endpoint(), Settings(agent_tool_endpoints="m"))  # type: ignore[arg-type]
    assert tool_capable(endpoint(), Settings(agent_tool_endpoints="*"))  # type: ignore[arg-type]


def test_a_checkpoint_is_written_only_by_the_run_holding_the_job(any_redis: redis.Redis) -> None:
    store = JobStore(any_redis, KEYS, ttl=100, stream_ttl=50)
    store.create("j", queue="chat.default", deadline=0, summary="", payload={})
    claim = store.claim("j", worker="w", lease=60, max_attempts=3)
    state = {"messages": [{"role": "tool", "content": "r"}], "steps": [{"tool": "web_search"}], "rounds": 1}
    step = {"round": 1, "tool": "web_search", "arguments": '{"q": "x"}', "error": None}
    assert not store.checkpoint_step("j", claim=claim.claim + 1, checkpoint=state, history=[{"event": "tool"}],
                                     events=[step])
    assert store.tool_checkpoint("j") is None and any_redis.xlen(KEYS.job_stream("j")) == 0
    assert store.checkpoint_step("j", claim=claim.claim, checkpoint=state, history=[{"event": "tool", **step}],
                                 events=[step])
    assert store.tool_checkpoint("j") == state
    (_, fields), = any_redis.xrange(KEYS.job_stream("j"))
    assert decode_event(fields) == {"type": "step", "data": step}
    record = store.get("j")
    assert record is not None and "tool_checkpoint" not in record
    assert record["history"][-1]["tool"] == "web_search"
    store.finish("j", "succeeded", {"content": "x", "endpoint": "e"}, claim=claim.claim)
    assert store.tool_checkpoint("j") is None  # an ended job's checkpoint is dropped, not kept for its TTL
    assert not store.checkpoint_step("j", claim=claim.claim, checkpoint=state, history=[], events=[])


def test_a_cancelled_job_drops_its_checkpoint(any_redis: redis.Redis) -> None:
    store = JobStore(any_redis, KEYS, ttl=100, stream_ttl=50)
    claim = store.claim("j", worker="w", lease=60, max_attempts=3)
    assert store.checkpoint_step("j", claim=claim.claim, checkpoint={"rounds": 1}, history=[], events=[])
    assert store.cancel("j")[0] == "cancelled" and store.tool_checkpoint("j") is None


def _res(known: list[Endpoint], **settings: Any) -> Any:
    snapshot = SimpleNamespace(endpoints=known)
    return SimpleNamespace(settings=Settings(**settings), registry=SimpleNamespace(snapshot=lambda: snapshot))


def test_a_tool_job_runs_on_capable_endpoints_waits_for_one_that_is_down_or_fails_when_none_exists() -> None:
    capable = Endpoint(id="c", chat_url="http://c/v1/chat/completions", model="m", model_name="M",
                       source="discovered", tool_calling=True)
    plain = Endpoint(id="p", chat_url="http://p/v1/chat/completions", model="m", model_name="M", source="discovered")
    tools: dict[str, Any] = {"web_search": FakeTool("web_search", ok("r"))}
    builtin, auto = JOB, JOB.model_copy(update={"tools": "auto"})
    assert tool_loop_endpoints(_res([capable, plain]), builtin, [plain, capable], tools) == [capable]
    with pytest.raises(NoLLMAvailable):  # the capable one is known, only not among the candidates now
        tool_loop_endpoints(_res([capable, plain]), builtin, [plain], tools)
    with pytest.raises(NoToolCapableLLM):
        tool_loop_endpoints(_res([plain]), builtin, [plain], tools)
    assert tool_loop_endpoints(_res([plain]), auto, [plain], tools) == []  # a plain chat
    assert tool_loop_endpoints(_res([capable]), builtin, [capable], {}) == []  # no tool configured: plain
    client_tools = JOB.model_copy(update={"tools": [FakeTool("f", ok("")).schema()]})
    assert tool_loop_endpoints(_res([capable]), client_tools, [capable], tools) == []


def test_calls_sent_back_are_complete_even_when_the_llm_left_parts_out() -> None:
    search = FakeTool("web_search", ok("r"))
    sloppy = [{"function": {"name": "web_search", "arguments": {"q": "dict, not text"}}}, {"function": {}}]
    llm = ScriptedLLM(answer(calls=sloppy), answer("fine"))
    result, _ = run(llm, {"web_search": search})
    assistant, *replies = llm.requests[1].messages[1:]
    assert assistant.content == "" and assistant.tool_calls is not None
    ids = [c["id"] for c in assistant.tool_calls]
    assert ids == ["call_r1_0", "call_r1_1"] and [m.tool_call_id for m in replies] == ids
    assert assistant.tool_calls[0]["function"]["arguments"] == '{"q": "dict, not text"}'
    assert assistant.tool_calls[1]["function"]["name"] == "unnamed"
    assert search.runs == [{"q": "dict, not text"}] and result.steps[1]["error"] == "unknown_tool"


def test_arguments_and_results_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    secret_args, secret_result = "query-only-the-llm-sees", "result-only-the-llm-sees"
    search = FakeTool("web_search", ok(secret_result))
    crash = FakeTool("run_code", lambda a: (_ for _ in ()).throw(RuntimeError(secret_args)))
    calls = [tool_call("web_search", {"q": secret_args}, "a"), tool_call("run_code", {"code": secret_args}, "b")]
    with caplog.at_level("DEBUG"):
        result, _ = run(ScriptedLLM(answer(calls=calls), answer("ok")), {"web_search": search, "run_code": crash})
    assert [s["error"] for s in result.steps] == [None, "tool_crashed"]
    logged = caplog.text
    assert "web_search" in logged and "tool_crashed" in logged and "RuntimeError" in logged  # the lines are there
    assert not any(record.exc_info for record in caplog.records)  # no traceback text with the exception's message
    assert secret_args not in logged and secret_result not in logged


def test_an_answer_with_too_many_calls_runs_the_first_ones_only() -> None:
    search = FakeTool("web_search", ok("r"))
    many = [tool_call("web_search", {"q": n}, f"c{n}") for n in range(tool_loop.MAX_CALLS_PER_ROUND + 3)]
    result, _ = run(ScriptedLLM(answer(calls=many), answer("ok")), {"web_search": search})
    assert sorted(r["q"] for r in search.runs) == list(range(tool_loop.MAX_CALLS_PER_ROUND))
    assert [s["error"] for s in result.steps][-3:] == ["too_many_calls"] * 3
