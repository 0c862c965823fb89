"""What a client sees of the built-in tools' steps: the text stream's <think> block (api/think.py via
/poll_requests' renderer), SSE `step` events, /v1 deltas; and the mock LLM scripted to call a tool."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from api.openai_format import Answer, chunk, step_delta
from api.routes.chat import _text_stream
from api.schemas import PollRequest
from api.sse import record_events
from llmpool.dev.mock_llm.replies import parse_chat_request, plan_reply
from llmpool.dev.mock_llm.state import BadConfig, Knobs

SEARCH = {"round": 1, "call_id": "c1", "tool": "web_search", "arguments": '{"query": "llmpool"}',
          "summary": "3 results: llmpool - a worker pool", "error": None, "duration": 0.25, "size": 812}
FAILED = {"round": 2, "call_id": "c2", "tool": "run_code", "arguments": '{"code": "1/0"}',
          "summary": "sandbox unreachable", "error": "http_error", "duration": 1.0, "size": 20}
END = {"type": "end", "state": "succeeded", "data": {"content": "x", "usage": {"completion_tokens": 2},
                                                     "timings": {"total": 1.0}}}


def text_of(events: list[dict[str, Any]]) -> str:
    async def rest() -> AsyncIterator[dict[str, Any]]:
        for event in events[1:]:
            yield event

    async def collect() -> str:
        return "".join([piece async for piece in _text_stream(events[0], rest())])
    return asyncio.run(collect())


def test_steps_show_in_one_think_block_before_the_answer_then_stats() -> None:
    text = text_of([{"type": "step", "data": SEARCH}, {"type": "step", "data": FAILED},
                    {"type": "token", "text": "The answer"}, {"type": "token", "text": " is 42."}, END])
    think, rest = text.split("</think>\n\n")
    assert think == ('<think>\nUsing tool: web_search {"query": "llmpool"}\n'
                     'Result (0.2s): 3 results: llmpool - a worker pool\n'
                     'Using tool: run_code {"code": "1/0"}\nTool error (http_error): sandbox unreachable\n')
    assert rest.startswith("The answer is 42.[STATS]")


def test_a_reset_shows_the_steps_so_far_again() -> None:
    text = text_of([{"type": "step", "data": SEARCH}, {"type": "token", "text": "Half an ans"}, {"type": "reset"},
                    {"type": "token", "text": "Whole answer"}, END])
    after = text.split("\n[RESET]\n")[1]
    assert after.startswith("<think>\nUsing tool: web_search") and "</think>\n\nWhole answer[STATS]" in after


def test_a_job_without_steps_streams_as_before() -> None:
    assert text_of([{"type": "token", "text": "plain"}, END]).startswith("plain[STATS]")


def test_sse_carries_each_step_as_an_event_with_its_id() -> None:
    async def collect() -> list[str]:
        return [c async for c in record_events("j1", [{"type": "step", "data": SEARCH, "id": "5-0"}])]
    (event,) = asyncio.run(collect())
    assert event.startswith("event: step\nid: 5-0\n") and json.loads(event.split("data: ")[1]) == SEARCH


def test_v1_shows_a_step_as_a_tool_call_with_its_result_beside_it() -> None:
    delta = step_delta(FAILED, 1)
    body = chunk(Answer("chatcmpl-1", 1, "m"), delta)
    (call,) = body["choices"][0]["delta"]["tool_calls"]
    assert call == {"index": 1, "id": "c2", "type": "function",
                    "function": {"name": "run_code", "arguments": '{"code": "1/0"}'}}
    result = body["choices"][0]["delta"]["llmpool_tool_result"]
    assert (result["tool_call_id"], result["error"], result["content"]) == ("c2", "http_error", "sandbox unreachable")


def _request(messages: list[dict[str, Any]], **extra: Any) -> Any:
    tools = [{"type": "function", "function": {"name": "web_search"}}]
    return parse_chat_request(json.dumps({"messages": messages, "tools": tools, **extra}).encode())


def test_the_mock_calls_its_scripted_tool_then_quotes_the_result() -> None:
    script = Knobs().merged({"tool_script": {"tool": "web_search", "arguments": {"query": "q"}}}).tool_script
    user = {"role": "user", "content": "hi"}
    first = plan_reply(_request([user]), container="c", reply=None, tool_script=script)
    assert first.tool_call is not None and first.finish_reason == "tool_calls"
    assert json.loads(first.tool_call["function"]["arguments"]) == {"query": "q"}
    result = {"role": "tool", "tool_call_id": first.tool_call["id"], "content": "Paris is the capital of France"}
    then = plan_reply(_request([user, {"role": "assistant", "tool_calls": [first.tool_call]}, result]),
                      container="c", reply=None, tool_script=script)
    assert "".join(then.tokens) == "The tool said: Paris is the capital of France"
    refused = plan_reply(_request([user], tool_choice="none"), container="c", reply=None, tool_script=script)
    assert refused.tool_call is None
    always = {**(script or {}), "always": True}
    assert plan_reply(_request([user, result], tool_choice="none"), container="c", reply=None,
                      tool_script=always).tool_call is not None
    unoffered = parse_chat_request(json.dumps({"messages": [user]}).encode())
    assert plan_reply(unoffered, container="c", reply=None, tool_script=script).tool_call is None


@pytest.mark.parametrize("bad", ["web_search", {"tool": ""}, {"tool": "t", "arguments": []},
                                 {"tool": "t", "always": "yes"}, {"tool": "t", "other": 1}])
def test_a_bad_tool_script_is_refused(bad: Any) -> None:
    with pytest.raises(BadConfig):
        Knobs().merged({"tool_script": bad})


def test_poll_requests_takes_builtin_or_none_besides_its_own_tools() -> None:
    def job(tools: Any) -> Any:
        return PollRequest.model_validate({"message": "hi", "tools": tools, "tool_choice": "auto"}).to_job(
            stream=True, now=0.0)

    assert job("builtin").tools == "builtin" and job("builtin").tool_choice is None
    assert job("none").tools is None and job(None).tools is None
    own = job([{"type": "function", "function": {"name": "f"}}])
    assert own.tools == [{"type": "function", "function": {"name": "f"}}] and own.tool_choice == "auto"
    with pytest.raises(ValidationError):
        job("everything")
