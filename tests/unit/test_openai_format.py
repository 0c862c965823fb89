"""The /v1 shapes: completions and chunks from a job's result, what is refused, and a mid-stream restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.openai_format import Answer, completion, ending_chunks
from api.openai_schemas import ChatCompletionRequest, unsupported_field
from api.routes.openai import _chunks
from llmpool.errors import InvalidJob

ANSWER = Answer(id="chatcmpl-j1", created=1, model="auto")
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
RESULT = {"content": "", "tool_calls": [CALL], "model": "m", "finish_reason": "tool_calls",
          "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def _body(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                                                 **fields})


def test_usage_says_estimated_only_when_llmpool_counted() -> None:
    counted = {**RESULT, "usage": {**RESULT["usage"], "estimated": True}}
    assert completion(ANSWER, counted)["usage"] == {**RESULT["usage"], "estimated": True}
    assert completion(ANSWER, RESULT)["usage"] == RESULT["usage"]  # the server's own: OpenAI's shape exactly
    assert ending_chunks(ANSWER, counted, with_usage=True)[-1]["usage"]["estimated"] is True


def test_a_tool_call_answer_has_no_content_and_finishes_with_tool_calls() -> None:
    body = completion(ANSWER, RESULT)
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert choice["finish_reason"] == "tool_calls" and body["usage"]["total_tokens"] == 5


def test_the_stream_ends_with_indexed_tool_calls_finish_reason_and_usage() -> None:
    chunks = ending_chunks(ANSWER, RESULT, with_usage=True)
    assert chunks[0]["choices"][0]["delta"]["tool_calls"] == [{"index": 0, **CALL}]
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls" and chunks[1]["usage"] is None
    assert chunks[2]["choices"] == [] and chunks[2]["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(("fields", "named"), [
    ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"logit_bias": {"1": 2.0}}, "logit_bias"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"tool_choice": "auto"}, "tool_choice"), ({"modalities": ["audio"]}, "modalities"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_what_llmpool_cannot_honour_is_named(fields: dict[str, Any], named: str) -> None:
    refused = unsupported_field(_body(**fields))
    assert refused is not None and refused[0] == named


def test_defaults_that_ask_for_nothing_are_accepted() -> None:
    assert unsupported_field(_body(n=1, logprobs=False, presence_penalty=0, modalities=["text"], stream=True,
                                   stream_options={"include_usage": False})) is None


def test_max_completion_tokens_wins_and_auto_asks_for_no_model() -> None:
    job = _body(max_tokens=10, max_completion_tokens=20).to_job(priority="high", deadline=None)
    assert job.max_tokens == 20 and job.model is None and job.priority == "high"


async def _events(*events: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    for event in events:
        yield event


def _run(first: dict[str, Any], *rest: dict[str, Any]) -> list[Any]:
    async def collect() -> list[str]:
        return [line async for line in _chunks(ANSWER, first, _events(*rest), with_usage=False, job_id="j1")]

    lines = asyncio.run(collect())
    return [line if line.startswith("data: [DONE]") else json.loads(line.removeprefix("data: ")) for line in lines]


def _text(lines: list[Any]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in lines
                   if isinstance(c, dict) and c.get("choices"))


def test_a_restart_before_any_text_went_out_is_invisible() -> None:
    end = {"type": "end", "state": "succeeded", "data": {"content": "second", "finish_reason": "stop"}}
    lines = _run({"type": "token", "text": ""}, {"type": "reset"}, {"type": "token", "text": "second"}, end)
    assert _text(lines) == "second" and lines[-1] == "data: [DONE]\n\n"


def test_a_restart_after_text_went_out_ends_the_stream_instead_of_gluing_two_answers() -> None:
    end = {"type": "end", "state": "succeeded", "data": {"content": "second", "finish_reason": "stop"}}
    lines = _run({"type": "token", "text": "fir"}, {"type": "reset"}, {"type": "token", "text": "second"}, end)
    assert _text(lines) == "fir"
    assert lines[-1]["error"]["code"] == "stream_restarted" and "/jobs/j1" in lines[-1]["error"]["message"]


def test_a_tool_without_a_function_name_is_an_invalid_job_not_a_crash() -> None:
    with pytest.raises(InvalidJob, match="tools"):
        _body(tools=[{"type": "function", "function": {}}]).to_job(priority="default", deadline=None)
