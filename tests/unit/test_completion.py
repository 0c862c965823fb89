"""Assembling an answer from many stream deltas: the same fields as before, built from parts."""

from __future__ import annotations

import json

import pytest

from llmpool.completion import MAX_TOOL_CALLS, Completion, parse_chunk, parse_completion
from llmpool.errors import InvalidResponse


def delta(**fields: object) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": fields}]})


def test_a_hundred_thousand_deltas_make_the_whole_text() -> None:
    done = Completion()
    pieces = [f"w{i} " for i in range(100_000)]
    for piece in pieces:
        assert parse_chunk(done, delta(content=piece)) == piece
    assert done.content == "".join(pieces)
    assert done.content is done.content  # joined once and kept, not joined again per read
    assert done.pieces == 100_000


def test_text_read_midway_then_more_deltas() -> None:
    done = Completion()
    parse_chunk(done, delta(content="Hel"))
    assert done.content == "Hel"
    parse_chunk(done, delta(content="lo"))
    assert done.content == "Hello"


def test_tool_call_arguments_from_many_pieces() -> None:
    done = Completion()
    parse_chunk(done, delta(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "get", "arguments": ""}}]))
    for piece in ['{"city"', ': "Pa', 'ris"}']:
        parse_chunk(done, delta(tool_calls=[{"index": 0, "function": {"arguments": piece}}]))
    parse_chunk(done, delta(tool_calls=[{"index": 1, "id": "c2", "function": {"name": "now", "arguments": "{}"}}]))
    assert done.tool_calls == [
        {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"city": "Paris"}'}},
        {"id": "c2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]


@pytest.mark.parametrize("call", [
    {"index": MAX_TOOL_CALLS, "function": {"arguments": "{}"}},  # would allocate slots up to it
    {"index": -1},
    {"index": "0"},
    {"index": 0, "function": "get"},
    {"index": 0, "function": {"arguments": 5}},
])
def test_garbled_tool_call_deltas_are_invalid_responses(call: dict[str, object]) -> None:
    with pytest.raises(InvalidResponse):
        parse_chunk(Completion(), delta(tool_calls=[call]))


@pytest.mark.parametrize("payload", [
    '{"choices": [{"delta": "text"}]}',
    '{"choices": [{"delta": {"tool_calls": {"index": 0}}}]}',
])
def test_garbled_deltas_are_invalid_responses(payload: str) -> None:
    with pytest.raises(InvalidResponse):
        parse_chunk(Completion(), payload)


def test_callers_build_and_read_a_completion_as_before() -> None:
    done = Completion(content="hi", finish_reason="stop", pieces=1, usage={"total_tokens": 4})
    assert (done.content, done.tool_calls, done.model, done.usage) == ("hi", [], None, {"total_tokens": 4})
    done.content = "bye"
    assert done.content == "bye" and Completion().content == ""


def test_a_whole_answer_with_tool_calls() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}}]
    body = {"choices": [{"message": {"content": None, "tool_calls": calls}, "finish_reason": "tool_calls"}]}
    done = parse_completion(json.dumps(body))
    assert (done.content, done.tool_calls, done.pieces) == ("", calls, 1)
    for bad in ({"message": "hi"}, {"message": {"tool_calls": "x"}}):
        with pytest.raises(InvalidResponse):
            parse_completion(json.dumps({"choices": [bad]}))


def test_a_whole_answers_tool_calls_come_in_openais_shape() -> None:
    calls = [{"function": {"name": "get", "arguments": {"city": "Paris"}}},  # Ollama's own shape: an object
             {"id": "c2", "function": {"name": "now"}}]  # no arguments at all
    body = {"choices": [{"message": {"content": None, "tool_calls": calls}, "finish_reason": "tool_calls"}]}
    assert parse_completion(json.dumps(body)).tool_calls == [
        {"id": None, "type": "function", "function": {"name": "get", "arguments": '{"city": "Paris"}'}},
        {"id": "c2", "type": "function", "function": {"name": "now", "arguments": ""}},
    ]


@pytest.mark.parametrize("call", [{"id": "c"}, {"function": {"arguments": "{}"}}, {"function": {"name": "f",
                                                                                                "arguments": 3}}])
def test_a_whole_answers_tool_call_without_a_name_or_with_odd_arguments_is_invalid(call: dict[str, object]) -> None:
    body = {"choices": [{"message": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]}
    with pytest.raises(InvalidResponse):
        parse_completion(json.dumps(body))


def test_a_streamed_tool_call_that_never_got_a_name_is_invalid() -> None:
    done = Completion()
    parse_chunk(done, delta(tool_calls=[{"index": 0, "id": "c1", "function": {"arguments": "{}"}}]))
    with pytest.raises(InvalidResponse):
        done.check_tool_calls()
    parse_chunk(done, delta(tool_calls=[{"index": 0, "function": {"name": "get"}}]))
    done.check_tool_calls()  # named now: nothing raised
