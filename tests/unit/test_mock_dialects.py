"""The mock LLM's real-server dialects (llmpool.dev.mock_llm.dialects), each read by llmpool's own client.

The mock runs on a thread (no process): `send_usage: false` (llama-cpp-python never reports
usage), `cut_stream` / `cut_stream_eof` (a stream ended with no finish_reason), `validation_500`
(a malformed request answered with a 500 and a traceback).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from llmpool.dev.mock_llm import BadConfig, ContainerSpec, MockLLM
from llmpool.endpoints import Endpoint
from llmpool.errors import IncompleteAnswer
from llmpool.llm_client import LLMClient, make_http_client
from llmpool.runner import _result
from llmpool.schemas import ChatJob, parse_job
from llmpool.settings import load_settings
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(30)

CHAT = "/v1/chat/completions"
JOB = parse_job({"messages": [{"role": "user", "content": "hi there"}]})
REPLY = "Hello from llm-a! You said: hi there"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockLLM]:
    with MockLLM([ContainerSpec(name="llm-a", ttft=0.0, tokens_per_second=0)], backend=False) as running:
        yield running


@pytest.fixture(autouse=True)
def plain(mock: MockLLM) -> Iterator[None]:
    yield
    mock.configure("llm-a", fault="none", send_usage=True, interrupt_requests=False, drop_after_tokens=2)


@pytest.fixture
def llm() -> Iterator[LLMClient]:
    settings = load_settings(agent_first_token_timeout=5, agent_request_timeout=10, agent_connect_timeout=2)
    with make_http_client(settings, max_connections=4) as http:
        yield LLMClient(http, settings)


def _ask(llm: LLMClient, mock: MockLLM, *, stream: bool, job: ChatJob = JOB) -> Any:
    endpoint = Endpoint(id="llm-a", chat_url=mock.url("llm-a") + CHAT, model="m", model_name="m", source="local")
    return _result(llm.chat(endpoint, job, stream=stream), endpoint, 1)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_no_usage_server_gets_counted_usage(mock: MockLLM, llm: LLMClient, stream: bool) -> None:
    mock.configure("llm-a", send_usage=False)
    result = _ask(llm, mock, stream=stream)  # llmpool asks for include_usage: the server ignores it
    assert result.content == REPLY and result.finish_reason == "stop"
    assert result.usage.estimated and result.usage.completion_tokens > 0 and result.usage.prompt_tokens > 0
    if stream:
        assert result.usage.completion_tokens == len(REPLY.split())  # one chunk a token, as streamed
    mock.configure("llm-a", send_usage=True)
    assert not _ask(llm, mock, stream=stream).usage.estimated  # the server's own figures again


def test_no_usage_server_sends_no_usage_anywhere(mock: MockLLM) -> None:
    mock.configure("llm-a", send_usage=False)
    body = {"model": "m", "messages": JOB.model_dump()["messages"], "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    with httpx.stream("POST", mock.url("llm-a") + CHAT, json=body, timeout=5) as response:
        text = "".join(response.iter_text())
    assert '"usage"' not in text and text.rstrip().endswith("data: [DONE]")
    whole = httpx.post(mock.url("llm-a") + CHAT, json={**body, "stream": False, "stream_options": None}, timeout=5)
    assert whole.status_code == 200 and "usage" not in whole.json()


@pytest.mark.parametrize("fault, ends_with_done", [("cut_stream", True), ("cut_stream_eof", False)])
def test_a_cut_stream_is_an_incomplete_answer(mock: MockLLM, llm: LLMClient, fault: str,
                                              ends_with_done: bool) -> None:
    mock.configure("llm-a", fault=fault, drop_after_tokens=3)
    body = {"model": "m", "messages": JOB.model_dump()["messages"], "stream": True}
    with httpx.stream("POST", mock.url("llm-a") + CHAT, json=body, timeout=5) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert (lines[-1] == "[DONE]") is ends_with_done
    chunks = [json.loads(line) for line in lines if line != "[DONE]"]
    assert len(chunks) == 4 and all(c["choices"][0]["finish_reason"] is None for c in chunks)  # role + 3 tokens
    with pytest.raises(IncompleteAnswer) as caught:
        _ask(llm, mock, stream=True)
    assert caught.value.details["tokens_sent"] == 3


def test_a_cut_whole_answer_is_an_incomplete_answer(mock: MockLLM, llm: LLMClient) -> None:
    mock.configure("llm-a", fault="cut_stream")
    with pytest.raises(IncompleteAnswer):
        _ask(llm, mock, stream=False)


TOOL_CALLS = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
TOOL_TURN = {"role": "tool", "tool_call_id": "c1", "content": "4"}


# As llama-cpp-python 0.3.36's server answered each (checked against the real server).
@pytest.mark.parametrize("messages", [
    [{"role": "robot", "content": "hi"}],
    [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": TOOL_CALLS}, TOOL_TURN],
    [{"role": "user"}],
    {"role": "user", "content": "hi"},
], ids=["unknown-role", "developer", "assistant-null", "assistant-null-tool-calls", "user-missing", "not-a-list"])
def test_validation_500_answers_what_llama_cpp_python_refuses_with_a_traceback(mock: MockLLM, messages: Any) -> None:
    mock.configure("llm-a", fault="validation_500")
    bad = httpx.post(mock.url("llm-a") + CHAT, json={"model": "m", "messages": messages}, timeout=5)
    assert bad.status_code == 500 and "Traceback (most recent call last)" in bad.json()["error"]["message"]


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": TOOL_CALLS}, TOOL_TURN],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": TOOL_CALLS}, TOOL_TURN],
], ids=["plain", "user-null", "assistant-empty-tool-calls", "assistant-no-content-tool-calls"])
def test_validation_500_answers_what_llama_cpp_python_accepts(mock: MockLLM, messages: Any) -> None:
    mock.configure("llm-a", fault="validation_500")
    good = httpx.post(mock.url("llm-a") + CHAT, json={"model": "m", "messages": messages}, timeout=5)
    assert good.status_code == 200 and good.json()["choices"][0]["finish_reason"] == "stop"


def test_send_usage_must_be_a_flag(mock: MockLLM) -> None:
    with pytest.raises(BadConfig):
        mock.configure("llm-a", send_usage="no")


def test_interrupt_requests_ends_a_running_stream_when_another_request_comes(mock: MockLLM, llm: LLMClient) -> None:
    mock.configure("llm-a", interrupt_requests=True, tokens_per_second=20)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(_ask, llm, mock, stream=True)
            wait_for(lambda: mock.stats("llm-a")["in_flight"] == 1, timeout=5, what="the first stream")
            time.sleep(0.1)  # a token or two of it are out
            second = _ask(llm, mock, stream=True)  # this request interrupts the first, and runs whole
            with pytest.raises(IncompleteAnswer):
                first.result(timeout=10)
        assert second.content == REPLY and second.finish_reason == "stop"
    finally:
        mock.configure("llm-a", interrupt_requests=False, tokens_per_second=0)
