"""A chat call to a server that is loading its model is EndpointStarting, read as the health pass
reads it (llmpool.prober.starting_reason): llama.cpp's 503 "Loading model", or any refusal from a
container the backend lists as still starting, before it sent output. Not a ServerError."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest

from llmpool.endpoints import Endpoint
from llmpool.errors import EndpointStarting, EndpointUnreachable, ServerError
from llmpool.llm_client import LLMClient, status_error
from llmpool.schemas import parse_job
from llmpool.settings import Settings
from tests.unit.raw_server import Behaviour, RawServer

JOB = parse_job({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
LOADING = b'{"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}'


def _answer(status: str, body: bytes) -> Behaviour:
    def behaviour(conn: socket.socket, _stop: threading.Event) -> None:
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
    return behaviour


def _endpoint(url: str, *, starting: bool = False) -> Endpoint:
    return Endpoint(id="e1", chat_url=url.rstrip("/") + "/v1/chat/completions", model="m", model_name="m",
                    source="local", container_starting=starting)


def _call(endpoint: Endpoint) -> None:
    with httpx.Client() as http:
        LLMClient(http, Settings(agent_request_timeout=5)).chat(endpoint, JOB, stream=False)


def test_llama_cpps_loading_503_is_starting_and_another_503_a_server_error() -> None:
    assert isinstance(status_error("e1", 503, LOADING, None), EndpointStarting)
    assert status_error("e1", 503, LOADING, "3").details["retry_after"] == 3.0
    assert type(status_error("e1", 503, b'{"error": {"message": "overloaded"}}', None)) is ServerError


def test_a_call_answered_loading_model_raises_endpoint_starting(serve: Callable[[Behaviour], RawServer]) -> None:
    server = serve(_answer("503 Service Unavailable", LOADING))
    with pytest.raises(EndpointStarting, match="loading model"):
        _call(_endpoint(server.url))


@pytest.mark.parametrize("starting", [True, False])
def test_a_container_still_starting_that_refuses_the_call_is_starting(
        serve: Callable[[Behaviour], RawServer], starting: bool) -> None:
    server = serve(_answer("502 Bad Gateway", b'{"error": "upstream not ready"}'))
    expected = EndpointStarting if starting else ServerError
    with pytest.raises(expected):
        _call(_endpoint(server.url, starting=starting))
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    refused = replace(_endpoint(f"http://127.0.0.1:{port}/"), container_starting=starting)
    with pytest.raises(EndpointStarting if starting else EndpointUnreachable):
        _call(refused)
