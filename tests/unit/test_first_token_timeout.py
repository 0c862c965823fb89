"""A call's adaptive first-token timeout (LLMClient.chat), against raw-socket servers in threads.

The bound holds until output starts, whatever arrives before it (keep-alive comments are no token),
and is lifted by the first token: after it only the total and the per-read silence bound the call.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from llmpool.endpoints import Endpoint
from llmpool.errors import FirstTokenTimeout
from llmpool.llm_client import LLMClient, make_http_client
from llmpool.schemas import parse_job
from llmpool.settings import load_settings
from tests.unit.raw_server import RawServer

JOB = parse_job({"messages": [{"role": "user", "content": "q"}], "stream": True})
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
WAIT = 0.4  # the first-token timeout these calls get


def _chunk(text: str, finish: str | None = None) -> bytes:
    body = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


def keepalives_only(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(SSE_HEAD)
    while not stop.wait(0.1):
        conn.sendall(b": keep-alive\n\n")


def silent(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(10)


def tokens_after(first: float, gap: float, count: int) -> Callable[[socket.socket, threading.Event], None]:
    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(SSE_HEAD)
        if stop.wait(first):
            return
        for n in range(count):
            conn.sendall(_chunk(f"t{n} "))
            if stop.wait(gap):
                return
        conn.sendall(_chunk("", "stop") + b"data: [DONE]\n\n")
    return behaviour




@pytest.fixture
def llm() -> Iterator[LLMClient]:
    settings = load_settings(agent_first_token_timeout=2, agent_request_timeout=5, agent_connect_timeout=1)
    with make_http_client(settings, max_connections=4) as http:
        yield LLMClient(http, settings)


def endpoint(server: RawServer) -> Endpoint:
    return Endpoint(id="raw", chat_url=server.url.rstrip("/") + "/v1/chat/completions", model="m", model_name="m",
                    source="local")


@pytest.mark.parametrize("behaviour", [keepalives_only, silent], ids=["keep-alives", "silence"])
def test_no_token_within_the_wait_ends_the_call_as_a_first_token_timeout(serve, llm: LLMClient,  # noqa: ANN001
                                                                         behaviour) -> None:  # noqa: ANN001
    seen: list[float] = []
    started = time.monotonic()
    with pytest.raises(FirstTokenTimeout) as caught:
        llm.chat(endpoint(serve(behaviour)), JOB, first_token_timeout=WAIT, on_first_token=seen.append)
    elapsed = time.monotonic() - started
    assert WAIT <= elapsed < WAIT + 0.2  # cut at its own wait, far before the 2 s setting
    assert caught.value.details["timeout"] == WAIT and seen == []


def test_the_first_token_lifts_the_wait_and_is_reported_once(serve, llm: LLMClient) -> None:  # noqa: ANN001
    seen: list[float] = []
    server = serve(tokens_after(first=0.2, gap=0.3, count=3))  # the answer ends ~1.1 s in, past WAIT
    outcome = llm.chat(endpoint(server), JOB, first_token_timeout=WAIT, on_first_token=seen.append)
    assert outcome.completion.content == "t0 t1 t2 "
    assert len(seen) == 1 and 0.2 <= seen[0] < WAIT and outcome.ttft == seen[0]
    assert outcome.total > 0.8


def test_without_a_wait_of_its_own_a_call_waits_the_setting(serve, llm: LLMClient) -> None:  # noqa: ANN001
    outcome = llm.chat(endpoint(serve(tokens_after(first=0.6, gap=0.0, count=1))), JOB, first_token_timeout=None)
    assert outcome.completion.content == "t0 " and outcome.ttft is not None and outcome.ttft >= 0.6
