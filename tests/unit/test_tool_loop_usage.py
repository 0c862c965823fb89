"""A tool job's usage is every round's LLM call, once: rounds of an earlier run (from the checkpoint)
included, estimated when any round's was. And the calls sent back carry one id each, matched by
their tool messages, whatever ids the LLM gave."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from typing import Any

import pytest

import llmpool.tool_loop as tool_loop
from llmpool.endpoints import Endpoint
from llmpool.llm_client import LLMClient
from llmpool.runner import run_chat
from llmpool.schemas import ChatJob, ChatResult, Usage
from llmpool.tool_loop import LoopState, run_tool_loop
from llmpool.tools import ToolResult
from tests.unit.test_server_dialects import _Publisher, _SettlingGate, _usage, llm, whole
from tests.unit.test_tool_loop import JOB, FakeTool, ScriptedLLM, ok, run, tool_call

__all__ = ["llm"]  # the LLM client fixture, shared with the dialect tests


def counted(prompt: int, completion: int, *, content: str = "", calls: int = 0, estimated: bool = False) -> ChatResult:
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                  estimated=estimated)
    tool_calls = [tool_call("web_search", {"q": n}, f"c{n}") for n in range(calls)]
    return ChatResult(content=content, tool_calls=tool_calls, model="m", endpoint="e", usage=usage)


def test_the_answer_counts_every_rounds_tokens() -> None:
    llm = ScriptedLLM(counted(10, 3, calls=1), counted(40, 5, calls=2), counted(90, 7, content="done"))
    result, saved = run(llm, {"web_search": FakeTool("web_search", ok("r"))})
    assert result.usage == Usage(prompt_tokens=140, completion_tokens=15, total_tokens=155, estimated=False)
    assert [s.usage.total_tokens for s in saved] == [13, 58]  # each checkpoint holds the rounds so far


def test_one_estimated_round_makes_the_sum_estimated() -> None:
    llm = ScriptedLLM(counted(10, 3, calls=1, estimated=True), counted(20, 4, content="done"))
    result, _ = run(llm, {"web_search": FakeTool("web_search", ok("r"))})
    assert result.usage == Usage(prompt_tokens=30, completion_tokens=7, total_tokens=37, estimated=True)


def test_a_resumed_loop_adds_the_earlier_runs_rounds_once() -> None:
    search = FakeTool("web_search", ok("r"))
    first = ScriptedLLM(counted(10, 3, calls=1), counted(1000, 1000, content="never reached"))
    _, saved = run(first, {"web_search": search})
    stored = json.loads(json.dumps(saved[0].to_dict()))  # as it comes back from Redis
    again = ScriptedLLM(counted(30, 6, content="the answer"))
    result, _ = run(again, {"web_search": search}, resume=LoopState.from_dict(stored))
    assert result.usage == Usage(prompt_tokens=40, completion_tokens=9, total_tokens=49, estimated=False)


def test_a_checkpoint_without_usage_marks_the_answers_usage_estimated() -> None:
    search = FakeTool("web_search", ok("r"))
    _, saved = run(ScriptedLLM(counted(10, 3, calls=1), counted(1, 1, content="x")), {"web_search": search})
    stored = json.loads(json.dumps(saved[0].to_dict()))
    del stored["usage"]  # written before the loop kept usage
    result, _ = run(ScriptedLLM(counted(30, 6, content="the answer")), {"web_search": search},
                    resume=LoopState.from_dict(stored))
    assert result.usage == Usage(prompt_tokens=30, completion_tokens=6, total_tokens=36, estimated=True)
    assert LoopState.from_dict({"messages": [], "steps": [], "rounds": 0}).usage == Usage()


def test_calls_the_llm_named_alike_or_not_at_all_get_one_id_each_used_in_call_and_reply() -> None:
    search = FakeTool("web_search", ok("r"))
    calls = [tool_call("web_search", {"q": 0}, "call_0"), tool_call("web_search", {"q": 1}, "call_0"),
             {"id": None, "type": "function", "function": {"name": "web_search", "arguments": "{}"}},
             tool_call("web_search", {"q": 3}, "")]
    llm = ScriptedLLM(ChatResult(content="", tool_calls=calls, model="m", endpoint="e"), counted(1, 1, content="x"))
    result, _ = run(llm, {"web_search": search})
    assistant, *replies = llm.requests[1].messages[1:]
    assert assistant.tool_calls is not None
    ids = [c["id"] for c in assistant.tool_calls]
    assert ids == ["call_0", "call_r1_1", "call_r1_2", "call_r1_3"]
    assert [m.tool_call_id for m in replies] == ids and [s["call_id"] for s in result.steps] == ids
    assert assistant.content == ""  # not null: llama-cpp-python answers null content with a 500


def test_each_call_settles_its_own_tokens_and_the_answer_sums_them(serve, llm: LLMClient) -> None:  # noqa: ANN001
    answers = iter([whole({"role": "assistant", "content": None, "tool_calls": [tool_call("web_search", {"q": 1})]},
                          finish="tool_calls", usage=_usage(20, 5)),
                    whole({"role": "assistant", "content": "Paris."}, usage=_usage(60, 4))])
    lock = threading.Lock()

    def in_turn(conn: socket.socket, stop: threading.Event) -> None:
        with lock:
            behaviour = next(answers)
        behaviour(conn, stop)

    server = serve(in_turn)
    endpoint = Endpoint(id="raw", chat_url=server.url.rstrip("/") + "/v1/chat/completions", model="m",
                        model_name="m", source="local")
    gate = _SettlingGate()
    calls = itertools.count()

    def call(request: ChatJob, rounds: int) -> ChatResult:
        next(calls)
        result, _ = run_chat(request, job_id="j", candidates=[endpoint], client=llm,
                             publisher=_Publisher(), deadline=time.time() + 10, max_calls=1, gate=gate)  # type: ignore[arg-type]
        return result

    tools = {"web_search": FakeTool("web_search", ok("r"))}
    result = run_tool_loop(JOB.model_copy(update={"stream": False}), tools=tools, call=call,  # type: ignore[arg-type]
                           save=lambda state, steps: None, deadline=time.time() + 10, max_steps=5)
    assert result.content == "Paris." and next(calls) == 2
    assert gate.settled == [("success", 25), ("success", 64)]  # per call, as the gate charged each
    assert result.usage == Usage(prompt_tokens=80, completion_tokens=9, total_tokens=89, estimated=False)


def test_a_burst_of_calls_in_one_answer_is_cut_before_it_reaches_the_next_request_or_the_records() -> None:
    search = FakeTool("web_search", ok("r"))
    burst = [tool_call("web_search", {"q": n}, f"c{n}") for n in range(500)]
    llm = ScriptedLLM(ChatResult(content="", tool_calls=burst, model="m", endpoint="e"), counted(1, 1, content="x"))
    result, saved = run(llm, {"web_search": search})
    assistant, *replies = llm.requests[1].messages[1:]
    assert assistant.tool_calls is not None and len(assistant.tool_calls) == tool_loop.MAX_ANSWERED_CALLS
    assert len(replies) == len(result.steps) == len(saved[0].steps) == tool_loop.MAX_ANSWERED_CALLS
    assert len(search.runs) == tool_loop.MAX_CALLS_PER_ROUND


def test_calls_that_wait_for_a_free_thread_get_their_own_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tool_loop, "STUCK_GRACE", 0.05)
    monkeypatch.setattr(tool_loop, "MAX_PARALLEL_TOOLS", 1)

    def slow(args: dict[str, Any]) -> ToolResult:
        time.sleep(0.2)  # each well within its bound; the four one after another are not
        return ToolResult(content="done", error=None, duration=0.2, size=4, summary="done")

    search = FakeTool("web_search", slow, timeout=0.4)
    calls = [tool_call("web_search", {"q": n}, f"c{n}") for n in range(4)]
    result, _ = run(ScriptedLLM(ChatResult(content="", tool_calls=calls, model="m", endpoint="e"),
                                counted(1, 1, content="x")), {"web_search": search})
    assert [s["error"] for s in result.steps] == [None] * 4 and len(search.runs) == 4
