"""The mock LLM's release: answers held by a long ttft get their first token when told, not before.

The inflight benchmark holds every call open with a long ttft and releases them once all are open,
so a step lasts as long as its ramp rather than a guessed hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from llmpool.dev.mock_llm import ContainerSpec, MockControl, MockLLM
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(30)

HOLD = 120.0  # far longer than the test's timeout: only a release can answer in time


@pytest.fixture
def mock() -> Iterator[MockLLM]:
    with MockLLM([ContainerSpec(name="llm-a", ttft=HOLD, tokens_per_second=0)]) as running:
        yield running


def _chat(url: str, stream: bool) -> str:
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)
    response.raise_for_status()
    if not stream:
        return str(response.json()["choices"][0]["message"]["content"])
    text = ""
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize("stream", [True, False])
def test_release_answers_every_held_call(mock: MockLLM, stream: bool) -> None:
    url = mock.url("llm-a")
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(_chat, url, stream) for _ in range(3)]
        wait_for(lambda: mock.stats("llm-a")["in_flight"] == 3, timeout=10, what="3 calls held")
        assert not any(call.done() for call in calls)
        assert mock.release("llm-a") == {"released": 3}
        answers = [call.result(timeout=15) for call in calls]
    assert all(answer.startswith("Hello from llm-a") for answer in answers)


def test_a_call_after_the_release_is_held_again(mock: MockLLM) -> None:
    url = mock.url("llm-a")
    mock.release("llm-a")  # nothing waiting: releases nothing, and must not release later calls
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(_chat, url, True)
        wait_for(lambda: mock.stats("llm-a")["in_flight"] == 1, timeout=10, what="the call held")
        with pytest.raises(TimeoutError):
            call.result(timeout=1.0)
        mock.release("llm-a")
        assert call.result(timeout=15).startswith("Hello from llm-a")


def test_release_over_http(mock: MockLLM) -> None:
    with MockControl(mock.backend_url) as control, ThreadPoolExecutor(1) as pool:
        call = pool.submit(_chat, mock.url("llm-a"), True)
        wait_for(lambda: control.stats("llm-a")["in_flight"] == 1, timeout=10, what="the call held")
        assert control.release("llm-a") == {"released": 1}
        assert call.result(timeout=15).startswith("Hello from llm-a")
