"""What real servers send at the end of an answer, against raw-socket servers: the usage llmpool
counts (the server's, or its own estimate, marked) and which endings are no answer at all.

llama-cpp-python never sends a usage chunk and, in its default mode, ends a stream it interrupts
with `data: [DONE]` and no finish_reason; vLLM sends the finish_reason, then a usage-only chunk
with empty choices.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmpool.endpoints import Endpoint
from llmpool.errors import IncompleteAnswer, StreamCut
from llmpool.llm_client import LLMClient, make_http_client
from llmpool.runner import OpenGate, _result, run_chat
from llmpool.schemas import parse_job
from llmpool.settings import load_settings
from llmpool.usage import prompt_estimate
from tests.unit.raw_server import RawServer

JOB = parse_job({"messages": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "What is the capital of France?"}]})
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
TOKENS = ["The", " capital", " is", " Paris", "."]
Behaviour = Callable[[socket.socket, threading.Event], None]


def _data(body: dict[str, Any] | str) -> bytes:
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n".encode()


def _delta(text: str, finish: str | None = None) -> bytes:
    return _data({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]})


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def stream(tokens: list[str], *, finish: str | None = "stop", usage: dict[str, int] | None = None,
           done: bool = True) -> Behaviour:
    """An SSE answer: a role chunk, one chunk a token (the last with `finish`), then usage and [DONE]."""
    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        parts = [_data({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
        parts += [_delta(t, finish if i == len(tokens) - 1 else None) for i, t in enumerate(tokens)]
        if usage is not None:
            parts.append(_data({"choices": [], "usage": usage}))
        conn.sendall(SSE_HEAD + b"".join(parts) + (_data("[DONE]") if done else b""))
    return behaviour


def whole(message: dict[str, Any], *, finish: str | None = "stop", usage: dict[str, int] | None = None) -> Behaviour:
    """A non-stream chat.completion with `message`, its finish_reason and (maybe) usage."""
    body: dict[str, Any] = {"model": "m", "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        data = json.dumps(body).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (len(data), data))
    return behaviour


@pytest.fixture
def llm() -> Iterator[LLMClient]:
    settings = load_settings(agent_first_token_timeout=2, agent_request_timeout=5, agent_connect_timeout=1)
    with make_http_client(settings, max_connections=4) as http:
        yield LLMClient(http, settings)


def _call(llm: LLMClient, server: RawServer, *, stream: bool = True,
          tokens: list[str] | None = None) -> Any:
    endpoint = Endpoint(id="raw", chat_url=server.url.rstrip("/") + "/v1/chat/completions", model="m",
                        model_name="m", source="local")
    sink = tokens if tokens is not None else []
    outcome = llm.chat(endpoint, JOB, stream=stream, on_token=sink.append)
    return _result(outcome, endpoint, 1)


def test_a_stream_without_usage_counts_its_chunks_and_estimates_the_prompt(serve, llm: LLMClient) -> None:  # noqa: ANN001
    result = _call(llm, serve(stream(TOKENS)))
    assert result.content == "The capital is Paris."
    assert result.finish_reason == "stop"
    usage = result.usage
    assert usage.estimated
    assert usage.completion_tokens == len(TOKENS)
    assert usage.prompt_tokens == prompt_estimate(JOB) > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert result.timings.tpot is not None  # from the counted tokens: [STATS] shows it


def test_a_stream_with_usage_keeps_the_servers_figures(serve, llm: LLMClient) -> None:  # noqa: ANN001
    result = _call(llm, serve(stream(TOKENS, usage=_usage(23, 5))))
    assert result.usage.model_dump() == {**_usage(23, 5), "estimated": False}


def test_a_server_counting_fewer_tokens_than_it_streamed_is_corrected_up(serve, llm: LLMClient) -> None:  # noqa: ANN001
    result = _call(llm, serve(stream(TOKENS, usage=_usage(23, 1))))
    assert result.usage.model_dump() == {**_usage(23, len(TOKENS)), "estimated": True}


def test_zeros_where_content_came_back_are_estimated(serve, llm: LLMClient) -> None:  # noqa: ANN001
    result = _call(llm, serve(stream(TOKENS, usage=_usage(0, 0))))
    assert result.usage.estimated
    assert result.usage.completion_tokens == len(TOKENS) and result.usage.prompt_tokens == prompt_estimate(JOB)


def test_a_whole_answer_without_usage_is_estimated_from_its_text(serve, llm: LLMClient) -> None:  # noqa: ANN001
    text = "x" * 40
    result = _call(llm, serve(whole({"role": "assistant", "content": text})), stream=False)
    assert result.usage.model_dump() == {"prompt_tokens": prompt_estimate(JOB), "completion_tokens": 10,
                                         "total_tokens": prompt_estimate(JOB) + 10, "estimated": True}


def test_a_whole_answer_with_usage_keeps_it(serve, llm: LLMClient) -> None:  # noqa: ANN001
    server = serve(whole({"role": "assistant", "content": "Paris."}, usage=_usage(12, 3)))
    result = _call(llm, server, stream=False)
    assert result.usage.model_dump() == {**_usage(12, 3), "estimated": False}


@pytest.mark.parametrize("done", [True, False], ids=["done", "closed"])
def test_a_stream_no_choice_finished_is_incomplete(serve, llm: LLMClient, done: bool) -> None:  # noqa: ANN001
    sent: list[str] = []
    with pytest.raises(IncompleteAnswer) as caught:
        _call(llm, serve(stream(TOKENS[:2], finish=None, done=done)), tokens=sent)
    assert caught.value.code == "incomplete_answer"
    assert caught.value.details["tokens_sent"] == 2 and sent == TOKENS[:2]  # the reader must be told [RESET]
    assert isinstance(caught.value, StreamCut)  # retryable: charged to the endpoint, the job moves on


def test_vllms_finish_then_usage_only_chunk_is_complete(serve, llm: LLMClient) -> None:  # noqa: ANN001
    result = _call(llm, serve(stream(TOKENS, finish="length", usage=_usage(9, 5))))
    assert result.finish_reason == "length" and not result.usage.estimated


def test_an_empty_unfinished_whole_answer_is_incomplete(serve, llm: LLMClient) -> None:  # noqa: ANN001
    with pytest.raises(IncompleteAnswer):
        _call(llm, serve(whole({"role": "assistant", "content": ""}, finish=None)), stream=False)


@pytest.mark.parametrize("message, finish", [
    ({"role": "assistant", "content": "Paris."}, None),  # text without a reason: the text is the answer
    ({"role": "assistant", "content": ""}, "length"),  # finished, with nothing to say
], ids=["text-no-reason", "empty-finished"])
def test_whole_answers_that_are_answers(serve, llm: LLMClient, message: dict[str, Any],  # noqa: ANN001
                                        finish: str | None) -> None:
    result = _call(llm, serve(whole(message, finish=finish)), stream=False)
    assert result.content == message["content"] and result.finish_reason == finish


class _Publisher:
    """What run_chat asks of a publisher, and nothing stored."""

    cancelled = False

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def token(self, text: str) -> None:
        self.tokens.append(text)

    def reset(self) -> None:
        self.tokens.clear()

    def watch(self, cancel: object) -> None:
        return None

    def unwatch(self, cancel: object) -> None:
        return None


class _SettlingGate(OpenGate):
    def __init__(self) -> None:
        self.settled: list[tuple[str, int | None]] = []

    def settle(self, endpoint, job_id, ticket, *, outcome, reserved, used, duration):  # noqa: ANN001, ANN201
        self.settled.append((outcome, used))


def test_the_tpm_settlement_uses_the_counted_usage(serve, llm: LLMClient) -> None:  # noqa: ANN001
    server = serve(stream(TOKENS))  # no usage from the server
    endpoint = Endpoint(id="raw", chat_url=server.url.rstrip("/") + "/v1/chat/completions", model="m",
                        model_name="m", source="local")
    gate = _SettlingGate()
    result, _ = run_chat(JOB, job_id="j", candidates=[endpoint], client=llm, publisher=_Publisher(),  # type: ignore[arg-type]
                         deadline=time.time() + 10, max_calls=1, gate=gate)
    assert result.usage.estimated and result.usage.total_tokens > len(TOKENS)
    assert gate.settled == [("success", result.usage.total_tokens)]  # not None: the reservation is corrected
