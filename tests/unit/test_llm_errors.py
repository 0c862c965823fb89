"""Error translation and answer parsing: every failure lands on the right branch of the tree."""

from __future__ import annotations

import json

import httpx
import pytest

from llmpool.completion import Completion, parse_chunk, parse_completion, sse_payload
from llmpool.errors import (
    BadRequest,
    CallerError,
    ContextTooLong,
    EndpointRejected,
    EndpointTimeout,
    EndpointUnreachable,
    FirstTokenTimeout,
    InvalidResponse,
    NoFreeConnection,
    RateLimited,
    RetryableError,
    ServerError,
    StreamCut,
)
from llmpool.llm_client import status_error, translate_http_error

STATUS_CASES = [
    (400, b'{"error": {"message": "This model\'s maximum context length is 4096 tokens"}}', ContextTooLong),
    (400, b'{"error": {"message": "temperature must be >= 0"}}', BadRequest),
    (422, b'{"detail": "bad field"}', BadRequest),
    (413, b"too big", ContextTooLong),
    (429, b'{"error": "slow down"}', RateLimited),
    (401, b"unauthorized", EndpointRejected),
    (404, b'{"error": {"message": "model not found"}}', EndpointRejected),
    (408, b"", EndpointTimeout),
    (500, b"boom", ServerError),
    (503, b"<html>overloaded</html>", ServerError),
]


@pytest.mark.parametrize(("status", "body", "kind"), STATUS_CASES)
def test_status_errors(status: int, body: bytes, kind: type) -> None:
    err = status_error("e1", status, body, "7")
    assert type(err) is kind
    assert f"HTTP {status}" in err.message
    caller = status in (400, 413, 422)
    assert isinstance(err, CallerError) is caller
    assert isinstance(err, RetryableError) is not caller


def test_rate_limit_carries_retry_after_and_message_text() -> None:
    err = status_error("e1", 429, b'{"error": {"message": "slow down"}}', "2.5")
    assert isinstance(err, RateLimited)
    assert err.details["retry_after"] == 2.5 and "slow down" in err.message
    assert status_error("e1", 429, b"", "Wed, 21 Oct 2015 07:28:00 GMT").details["retry_after"] is None


REQ = httpx.Request("POST", "http://x")
HTTPX_CASES = [
    (httpx.ConnectError("refused", request=REQ), 0, EndpointUnreachable),
    (httpx.ConnectTimeout("slow", request=REQ), 0, EndpointUnreachable),
    (httpx.ReadTimeout("t", request=REQ), 0, FirstTokenTimeout),
    (httpx.ReadTimeout("t", request=REQ), 3, StreamCut),
    (httpx.PoolTimeout("t", request=REQ), 0, NoFreeConnection),  # ours, not the endpoint's
    (httpx.RemoteProtocolError("cut", request=REQ), 2, StreamCut),
    (httpx.ReadError("reset", request=REQ), 0, StreamCut),
]


@pytest.mark.parametrize(("exc", "pieces", "kind"), HTTPX_CASES)
def test_httpx_errors(exc: httpx.HTTPError, pieces: int, kind: type) -> None:
    err = translate_http_error(exc, "e1", pieces)
    assert type(err) is kind
    assert err.details == {"endpoint": "e1", "tokens_sent": pieces}


def test_sse_chunks_assemble_text_tool_calls_and_usage() -> None:
    done = Completion()
    chunks = [
        '{"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}',
        '{"choices": [{"delta": {"content": "Hel"}}]}',
        '{"choices": [{"delta": {"content": "lo"}, "finish_reason": null}]}',
        json.dumps({"choices": [{"delta": {"tool_calls": [
            {"index": 0, "id": "c1", "function": {"name": "get", "arguments": '{"a"'}}]}}]}),
        json.dumps({"choices": [{"delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ": 1}"}}]}, "finish_reason": "tool_calls"}]}),
        '{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}',
    ]
    texts = [parse_chunk(done, c) for c in chunks]
    assert texts[:3] == ["", "Hel", "lo"]
    assert done.content == "Hello" and done.model == "m" and done.finish_reason == "tool_calls"
    assert done.tool_calls == [{"id": "c1", "type": "function",
                                "function": {"name": "get", "arguments": '{"a": 1}'}}]
    assert done.usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert done.pieces == 4


@pytest.mark.parametrize(
    ("line", "payload"),
    [("data: {}", "{}"), ("data:[DONE]", "[DONE]"), (": keep-alive", None), ("", None),
     ("event: x", None)],
)
def test_sse_payload(line: str, payload: str | None) -> None:
    assert sse_payload(line) == payload


@pytest.mark.parametrize(
    "payload",
    ["not json", "[1, 2]", '{"choices": "x"}', '{"choices": [{"delta": {"content": 5}}]}',
     '{"error": {"message": "oom"}}'],
)
def test_garbled_chunks_are_invalid_responses(payload: str) -> None:
    with pytest.raises(InvalidResponse):
        parse_chunk(Completion(), payload)


def test_non_streaming_completion() -> None:
    done = parse_completion('{"model": "m", "choices": [{"message": {"content": "hi"}, '
                            '"finish_reason": "stop"}], "usage": {"completion_tokens": 1}}')
    assert (done.content, done.finish_reason, done.usage) == ("hi", "stop", {"completion_tokens": 1})
    with pytest.raises(InvalidResponse):
        parse_completion('{"choices": []}')
