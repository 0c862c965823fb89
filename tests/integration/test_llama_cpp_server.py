"""llmpool against a real server: llama-cpp-python's OpenAI-compatible server (issue 13, point 8).

The server runs as its own process in its default mode (`python -m llama_cpp.server --model ...`,
no concurrency flags) on a tiny model generated here (tests/tiny_gguf.py), and is listed in
AGENT_OPENAI_SERVERS; a real pool (Redis, Celery workers, the API) discovers it and runs chats.

What this server does that the mock LLM did not, checked first against the server alone so a
new version that changes it is noticed: a stream carries no usage even when asked for one
(`stream_options.include_usage`); its model id is the model's file path; a request that arrives
while a stream is running ends that stream with `data: [DONE]` and no `finish_reason`.

Then llmpool through it: usage counted from the stream and marked estimated, 8 concurrent chats
all whole (llmpool caps llama-cpp-python at one call at a time, so its own calls never cut each
other), and a stream another client cuts retried rather than taken for the answer.

The model never emits EOS (tests/tiny_gguf.py), so every complete answer has exactly max_tokens
tokens, each streamed as a chunk of its own: a count of the chunks is the truth to check against.

Needs `llama-cpp-python[server]` (compiled from source: see .ci/run and the README). Without it
the tests skip locally and fail under CI.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmpool.dev.mock_llm import MockLLM
from llmpool.dev.redis_server import RedisServer, free_port
from llmpool.llm_client import status_error
from tests.conftest import IN_CI, require_redis_binary
from tests.pool import Pool, pool_with_api
from tests.processes import ManagedProcess, clean_env
from tests.tiny_gguf import write_tiny_gguf

MAX_TOKENS = 16
CONCURRENT = 8
SERVER_PACKAGES = ("llama_cpp", "sse_starlette", "starlette_context")  # the [server] extra's imports


def require_llama_cpp_server() -> None:
    """Skip when llama-cpp-python's server cannot be imported, except under CI (a failure there)."""
    missing = [name for name in SERVER_PACKAGES if find_spec(name) is None]
    if not missing:
        return
    reason = (f"llama-cpp-python[server] is not installed (missing {', '.join(missing)}); "
              "see README 'The real-server test' to build it")
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Real:
    model: Path
    server: str  # the llama-cpp-python server's base URL
    pool: Pool
    api: str

    def chat_json(self, message: str) -> dict[str, Any]:
        resp = httpx.post(self.api + "/poll_requests", json={"message": message, "max_tokens": MAX_TOKENS},
                          headers={"Accept": "application/json"}, timeout=60)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def chat_text(self, message: str, *, max_tokens: int = MAX_TOKENS,
                  on_first_text: Callable[[], object] | None = None) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The text stream's answer, its [STATS] and the job's record; `on_first_text` is called once
        the first piece of the answer has come."""
        with httpx.stream("POST", self.api + "/poll_requests", timeout=60,
                          json={"message": message, "max_tokens": max_tokens}) as resp:
            assert resp.status_code == 200, resp.read().decode()
            job_id = resp.headers["X-Job-Id"]
            pieces = []
            for piece in resp.iter_text():
                if on_first_text is not None and piece:
                    on_first_text()
                    on_first_text = None
                pieces.append(piece)
            text = "".join(pieces)
        assert "[STATS]" in text, text
        answer, stats = text.rsplit("[STATS]", 1)
        record = httpx.get(f"{self.api}/jobs/{job_id}", timeout=10).json()
        return answer, json.loads(stats), record


def start_llama_server(tmp: Path, model: Path, *, timeout: float = 60) -> tuple[ManagedProcess, str]:
    """`python -m llama_cpp.server` on a free port, default mode; ready once /v1/models answers."""
    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--host", "127.0.0.1", "--port", str(port)]
    proc = ManagedProcess("llama-cpp-python server", argv, clean_env(), tmp / "llama-server.log").start()
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(url + "/v1/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    proc.wait_ready(answers, timeout)
    return proc, url


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Real]:
    require_llama_cpp_server()
    require_redis_binary()
    tmp = tmp_path_factory.mktemp("llama-cpp")
    model = write_tiny_gguf(tmp / "tiny-llama.F16.gguf")  # F16: what its matrices are, and what the name says
    llama, server_url = start_llama_server(tmp, model)
    try:
        with RedisServer(data_dir=tmp / "redis") as redis_server:
            mock = MockLLM().start()  # no containers: its backend lists none, the real server is all there is
            with pool_with_api(tmp, redis_server, mock, workers=2, threads=8, endpoints=1,
                               agent_openai_servers=server_url, agent_first_token_timeout=15,
                               agent_request_timeout=30) as (pool, api):
                yield Real(model=model, server=server_url, pool=pool, api=api)
    finally:
        llama.stop()


def _sse_events(resp: httpx.Response) -> Iterator[dict[str, Any] | str]:
    """The data of each SSE event: a parsed chunk, or the string "[DONE]"."""
    for line in resp.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            yield "[DONE]" if data == "[DONE]" else json.loads(data)


def _stream_body(model: Path, max_tokens: int) -> dict[str, Any]:
    return {"model": str(model), "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}


# --- the server's own dialect, read directly --------------------------------------------------

def test_the_server_names_the_model_by_its_file_path(real: Real) -> None:
    ids = [m["id"] for m in httpx.get(real.server + "/v1/models", timeout=10).json()["data"]]
    assert ids == [str(real.model)]


def test_the_servers_stream_has_no_usage_even_when_asked(real: Real) -> None:
    with httpx.stream("POST", real.server + "/v1/chat/completions", json=_stream_body(real.model, MAX_TOKENS),
                      timeout=60) as resp:
        events = list(_sse_events(resp))
    chunks = [e for e in events if isinstance(e, dict)]
    assert events[-1] == "[DONE]"
    assert not any(c.get("usage") for c in chunks)
    contents = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"][0]["delta"].get("content")]
    assert len(contents) == MAX_TOKENS  # one chunk per token: what llmpool's count can rely on
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_a_second_request_cuts_a_running_stream_with_done_and_no_finish_reason(real: Real) -> None:
    """The cut stream's last event is [DONE], then the server drops the connection mid-body."""
    long = 1500  # far more than the second request takes to arrive (it is sent after the first token)
    events: list[dict[str, Any] | str] = []
    broken: httpx.HTTPError | None = None
    with httpx.Client(timeout=60) as http, ThreadPoolExecutor(1) as other:
        with http.stream("POST", real.server + "/v1/chat/completions", json=_stream_body(real.model, long)) as resp:
            second = None
            try:
                for event in _sse_events(resp):
                    events.append(event)
                    if second is None and isinstance(event, dict) and event["choices"][0]["delta"].get("content"):
                        second = other.submit(httpx.post, real.server + "/v1/chat/completions", timeout=60,
                                              json={**_stream_body(real.model, 4), "stream": False})
            except httpx.RemoteProtocolError as exc:
                broken = exc
        assert second is not None and second.result().status_code == 200
    chunks = [e for e in events if isinstance(e, dict)]
    assert events[-1] == "[DONE]" and len(chunks) < long
    assert not any(c["choices"][0].get("finish_reason") for c in chunks)
    assert broken is not None  # "incomplete chunked read": no clean end of the body after [DONE]


def test_the_server_refuses_developer_and_a_null_assistant_content_with_a_500_llmpool_makes_one_line(
        real: Real) -> None:
    """Valid in OpenAI's schema, refused by this server: why llmpool sends system and "" instead.
    Its 500 carries pydantic's report and its own file paths; the caller sees one clean line."""
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    for messages in ([{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
                     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": calls},
                      {"role": "tool", "tool_call_id": "c1", "content": "4"}]):
        resp = httpx.post(real.server + "/v1/chat/completions", json={"messages": messages, "max_tokens": 2},
                          timeout=30)
        assert resp.status_code == 500 and 'File "' in resp.json()["error"]["message"]
        message = str(status_error("e1", 500, resp.content, None))
        assert 'File "' not in message and ".py" not in message and "site-packages" not in message
        assert message.startswith("e1 answered HTTP 500: ") and len(message) < 250


# --- llmpool through the real server ------------------------------------------------------------

def test_developer_and_a_tool_call_turn_without_content_are_answered(real: Real) -> None:
    """The same messages through llmpool: sent as system and "", answered, no call failed."""
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    messages = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "what is 2+2?"},
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "c1", "content": "4"}]
    resp = httpx.post(real.api + "/v1/chat/completions", timeout=60,
                      json={"model": str(real.model), "messages": messages, "max_tokens": 4})
    assert resp.status_code == 200, resp.text
    record = httpx.get(f"{real.api}/jobs/{resp.headers['X-Job-Id']}", timeout=10).json()
    assert record["state"] == "succeeded" and record["calls"] == 1, record
    assert resp.json()["choices"][0]["finish_reason"] == "length"

def test_discovery_knows_the_server_its_one_slot_and_the_quantization_in_the_file_name(real: Real) -> None:
    selection = real.pool.registry.selection()
    assert selection is not None and len(selection.order) == 1
    endpoint = selection.order[0]
    assert endpoint.model == str(real.model) and endpoint.source == "openai"
    assert (endpoint.kind, endpoint.slots, endpoint.quantization) == ("llama-cpp-python", 1, "F16")


def test_a_json_answer_has_estimated_usage_and_the_finish_reason(real: Real) -> None:
    body = real.chat_json("Hello there")
    assert body["status"] == "succeeded" and body["model"] == str(real.model)
    assert len(body["answer"]) >= MAX_TOKENS  # every token is at least one character
    assert body["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["estimated"] is True  # the server sent no usage: the figures are llmpool's
    assert usage["completion_tokens"] == MAX_TOKENS
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + MAX_TOKENS


def test_a_text_stream_ends_with_stats_counted_from_the_stream(real: Real) -> None:
    answer, stats, record = real.chat_text("stream me please")
    assert len(answer) >= MAX_TOKENS and "[RESET]" not in answer
    assert stats["tokens_decoded"] == MAX_TOKENS and stats["tpot"] is not None
    assert record["state"] == "succeeded" and record["result"]["content"] == answer
    assert record["result"]["usage"]["estimated"] is True


def test_eight_concurrent_chats_all_get_full_answers(real: Real) -> None:
    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(real.chat_text, [f"chat number {n}" for n in range(CONCURRENT)]))
    for answer, stats, record in results:
        result = record["result"]
        assert record["state"] == "succeeded", record
        assert result["finish_reason"] == "length", record  # not a stream the server cut with [DONE]
        assert stats["tokens_decoded"] == MAX_TOKENS and len(result["content"]) >= MAX_TOKENS, record
        assert answer.rsplit("\n[RESET]\n", 1)[-1] == result["content"]  # the last attempt is the answer


def test_a_stream_another_client_cuts_is_retried_not_taken_for_the_answer(real: Real) -> None:
    """Another client's request cuts llmpool's running stream ([DONE], no finish_reason): the pool
    says [RESET] and calls again, and the answer is the second call's, whole."""
    long = 500  # the other client's request lands about 150 tokens in (sent once the first text came)
    with ThreadPoolExecutor(1) as other:
        cut: list[Future[httpx.Response]] = []
        answer, stats, record = real.chat_text("cut me", max_tokens=long, on_first_text=lambda: cut.append(
            other.submit(httpx.post, real.server + "/v1/chat/completions", timeout=60,
                         json={**_stream_body(real.model, 4), "stream": False})))
        assert cut and cut[0].result().status_code == 200
    result = record["result"]
    assert record["state"] == "succeeded" and record["calls"] == 2, record
    failed = [e for e in record["history"] if e["event"] == "call_failed"]
    assert [e["error"] for e in failed] == ["incomplete_answer"], record["history"]
    assert answer.count("[RESET]") == 1, answer  # one per discarded partial answer, not one more per run
    assert answer.rsplit("\n[RESET]\n", 1)[1] == result["content"]
    assert result["finish_reason"] == "length" and stats["tokens_decoded"] == long
