"""OpenAI's message rules, checked before any LLM sees a message (llmpool.message_rules).

llama-cpp-python's server answers these malformed messages with a 500 and a traceback, which
would count against the endpoint; llmpool refuses them itself: InvalidJob at submit and in the
worker (parse_job), a 422 on the /v1 route (the request body's own validation).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api.openai_schemas import ChatCompletionRequest
from llmpool.errors import InvalidJob
from llmpool.schemas import parse_job

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
USER = {"role": "user", "content": "Weather in Paris?"}


def _job(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": list(messages)}


BAD = {
    "unknown role": (_job({"role": "robot", "content": "hi"}), "role"),
    "user without content": (_job({"role": "user"}), "content is required"),
    "user with null content": (_job({"role": "user", "content": None}), "content is required"),
    "assistant null content, no calls": (_job(USER, {"role": "assistant", "content": None}), "content is required"),
    "tool_calls on a user": (_job({"role": "user", "content": "x", "tool_calls": [CALL]}), "only an assistant"),
    "call without function": (_job(USER, {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}),
                              "function"),
    "call with empty name": (_job(USER, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "", "arguments": "{}"}}]}), "function.name"),
    "call with object arguments": (_job(USER, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": {"city": "Paris"}}}]}), "function.arguments"),
    "call of another type": (_job(USER, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "type": "retrieval"}]}), "type must be 'function'"),
    "tool without tool_call_id": (_job(USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                                       {"role": "tool", "content": "18C"}), "tool_call_id"),
    "tool reply with no call before": (_job(USER, {"role": "tool", "tool_call_id": "call_1", "content": "18C"}),
                                       "no assistant tool_calls before it"),
    "unknown part type": (_job({"role": "user", "content": [{"type": "video", "video": {}}]}), "video"),
    "image part on a system message": (_job({"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}), "system message takes"),
    "text part without text": (_job({"role": "user", "content": [{"type": "text"}]}), "'text'"),
    "image part without url": (_job({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}), "url"),
    "empty parts": (_job({"role": "user", "content": []}), "empty list"),
}

GOOD = {
    "plain chat": _job({"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Rules."}, USER,
                       {"role": "assistant", "content": "Sunny."}),
    "a tool round": _job(USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "18C"}),
    "assistant text and calls": _job(USER, {"role": "assistant", "content": "Let me look.", "tool_calls": [CALL]},
                                     {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text",
                                                                                             "text": "18C"}]}),
    "user parts": _job({"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                    {"type": "image_url", "image_url": {"url": "data:,x"}}]}),
    "assistant refusal part": _job(USER, {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}),
    "empty assistant text": _job(USER, {"role": "assistant", "content": ""}),
}


@pytest.mark.parametrize("job, reason", BAD.values(), ids=BAD.keys())
def test_a_malformed_message_is_an_invalid_job(job: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidJob) as caught:
        parse_job(job)
    assert caught.value.code == "invalid_job" and reason in caught.value.message


@pytest.mark.parametrize("job", GOOD.values(), ids=GOOD.keys())
def test_well_formed_messages_pass(job: dict[str, Any]) -> None:
    sent = [{k: v for k, v in m.items() if v is not None} for m in job["messages"]]  # as llm_request sends them
    assert [m.model_dump(exclude_none=True) for m in parse_job(job).messages] == sent


@pytest.mark.parametrize("job, reason", BAD.values(), ids=BAD.keys())
def test_the_v1_route_refuses_them_before_a_job_exists(job: dict[str, Any], reason: str) -> None:
    with pytest.raises((ValidationError, InvalidJob)):  # 422 invalid_request, or 422 invalid_job (the order)
        ChatCompletionRequest.model_validate({"model": "auto", **job}).to_job(priority="default", deadline=None)
