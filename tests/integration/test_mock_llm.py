"""The mock LLM server over real HTTP: replies, SSE, auth, every fault, backend, control, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmpool.dev.mock_llm import (
    BadConfig,
    Conflict,
    ContainerSpec,
    MockControl,
    MockLLM,
    UnknownContainer,
    deploy_id,
)
from llmpool.dev.redis_server import free_port

pytestmark = pytest.mark.timeout(60)

TOKEN = "eyJhbGciOiJIUzI1NiJ9.test.token"
CHAT = "/v1/chat/completions"
HELLO = {"model": "meta-llama/Llama-3.1-8B-Instruct",
         "messages": [{"role": "system", "content": "be brief"},
                      {"role": "user", "content": "hi there"}]}
HELLO_TEXT = "Hello from llm-a! You said: hi there"
HELLO_TOKENS = ["Hello", " from", " llm-a!", " You", " said:", " hi", " there"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}},
         {"type": "function", "function": {"name": "other", "parameters": {}}}]


@pytest.fixture
def mock() -> Iterator[MockLLM]:
    specs = [
        ContainerSpec(name="llm-a", ttft=0.0, tokens_per_second=0),
        ContainerSpec(name="llm-secure", token=TOKEN, ttft=0.0, tokens_per_second=0),
        ContainerSpec(name="emb", model_name="bge-large-en", hf_model_id="BAAI/bge-large-en",
                      model_type="embedding"),
    ]
    with MockLLM(specs) as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http:
        yield http


def chat(http: httpx.Client, mock: MockLLM, body: dict[str, Any] | None = None,
         name: str = "llm-a", **kwargs: Any) -> httpx.Response:
    return http.post(mock.url(name) + CHAT, json=body or HELLO, **kwargs)


def stream_events(http: httpx.Client, url: str, body: dict[str, Any]) -> list[Any]:
    """The parsed `data:` payloads of a streamed answer ("[DONE]" kept as a string)."""
    events: list[Any] = []
    with http.stream("POST", url + CHAT, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line:
                assert line.startswith("data: ")
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def port_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- replies ----------------------------------------------------------------------------------

def test_non_streaming_reply_and_usage(mock: MockLLM, client: httpx.Client) -> None:
    body = chat(client, mock).json()
    assert body["object"] == "chat.completion"
    assert body["model"] == HELLO["model"]
    assert body["choices"][0]["message"] == {"role": "assistant", "content": HELLO_TEXT}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}


def test_streaming_sse_format(mock: MockLLM, client: httpx.Client) -> None:
    body = {**HELLO, "stream_options": {"include_usage": True}}
    events = stream_events(client, mock.url("llm-a"), body)
    role, *content, usage, done = events
    assert done == "[DONE]"
    assert role["object"] == "chat.completion.chunk"
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in content] == HELLO_TOKENS
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * 6 + ["stop"]
    assert {c["model"] for c in events[:-1]} == {HELLO["model"]}
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}


def test_stream_without_include_usage_has_no_usage_chunk(mock: MockLLM, client: httpx.Client,
                                                         ) -> None:
    events = stream_events(client, mock.url("llm-a"), HELLO)
    assert events[-1] == "[DONE]"
    assert all(e["choices"] and "usage" not in e for e in events[:-1])


def test_max_tokens_caps_the_reply(mock: MockLLM, client: httpx.Client) -> None:
    body = chat(client, mock, {**HELLO, "max_tokens": 3}).json()
    assert body["choices"][0]["message"]["content"] == "Hello from llm-a!"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    events = stream_events(client, mock.url("llm-a"), {**HELLO, "max_tokens": 2})
    assert [e["choices"][0]["delta"].get("content") for e in events[1:-1]] == ["Hello", " from"]
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_reply_knob_overrides_the_text(mock: MockLLM, client: httpx.Client) -> None:
    mock.configure("llm-a", reply="Fixed answer.")
    assert chat(client, mock).json()["choices"][0]["message"]["content"] == "Fixed answer."


def test_tool_call(mock: MockLLM, client: httpx.Client) -> None:
    body = {**HELLO, "tools": TOOLS,
            "messages": [{"role": "user", "content": "use a tool for the weather"}]}
    choice = chat(client, mock, body).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function"
    arguments = json.dumps({"request": "use a tool for the weather"})
    assert call["function"] == {"name": "get_weather", "arguments": arguments}
    events = stream_events(client, mock.url("llm-a"), body)
    deltas = [e["choices"][0]["delta"].get("tool_calls") for e in events[1:-1]]
    assert deltas[0][0]["function"]["name"] == "get_weather"
    assert len(deltas) > 3  # the arguments come in pieces, as vLLM streams them
    assert "".join(d[0]["function"]["arguments"] for d in deltas) == arguments
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    plain = {**body, "messages": [{"role": "user", "content": "no tools needed"}]}
    assert chat(client, mock, plain).json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("payload", [
    {"model": "m"}, {"model": "m", "messages": []}, {"model": "m", "messages": "hi"},
    {"model": "m", "messages": [{"content": "no role"}]},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
])
def test_invalid_body_gets_openai_style_400(mock: MockLLM, client: httpx.Client,
                                            payload: dict[str, Any]) -> None:
    response = client.post(mock.url("llm-a") + CHAT, json=payload)
    assert response.status_code == 400
    assert set(response.json()["error"]) >= {"message", "type", "code"}


def test_not_json_gets_400(mock: MockLLM, client: httpx.Client) -> None:
    response = client.post(mock.url("llm-a") + CHAT, content=b"{nope")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_models_and_health(mock: MockLLM, client: httpx.Client) -> None:
    models = client.get(mock.url("emb") + "/v1/models").json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "BAAI/bge-large-en"
    assert models["data"][0]["object"] == "model"
    assert client.get(mock.url("llm-a") + "/health").json() == {"status": "ok"}


def test_bearer_token_required_and_exact(mock: MockLLM, client: httpx.Client) -> None:
    url = mock.url("llm-secure")
    assert client.post(url + CHAT, json=HELLO).status_code == 401
    wrong = {"Authorization": f"Bearer {TOKEN}x"}
    assert client.post(url + CHAT, json=HELLO, headers=wrong).status_code == 401
    assert client.get(url + "/v1/models").status_code == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post(url + CHAT, json=HELLO, headers=good).status_code == 200
    assert client.get(url + "/health").status_code == 200  # health stays open, like vLLM
    stats = mock.stats("llm-secure")
    assert stats["last_authorization"] == f"Bearer {TOKEN}"
    assert stats["by_status"] == {"401": 3, "200": 2}


def test_stats_and_reset(mock: MockLLM, client: httpx.Client) -> None:
    chat(client, mock)
    client.get(mock.url("llm-a") + "/health")
    stats = mock.stats("llm-a")
    assert (stats["requests"], stats["chat_requests"], stats["in_flight"]) == (2, 1, 0)
    assert stats["last_body"] == HELLO
    assert stats["records"][0]["path"] == CHAT
    assert stats["records"][0]["model"] == HELLO["model"]
    assert stats["records"][1]["status"] == 200
    mock.reset("llm-a")
    stats = mock.stats("llm-a")
    assert (stats["requests"], stats["records"], stats["last_body"]) == (0, [], None)


def test_peak_in_flight_under_ten_concurrent_requests(mock: MockLLM) -> None:
    mock.configure("llm-a", ttft=0.5)
    with httpx.Client(timeout=5.0, limits=httpx.Limits(max_connections=20)) as http:
        with ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(lambda _: chat(http, mock).status_code, range(10)))
    assert codes == [200] * 10
    stats = mock.stats("llm-a")
    assert stats["peak_in_flight"] == 10
    assert stats["in_flight"] == 0


def test_timing_knobs(mock: MockLLM, client: httpx.Client) -> None:
    mock.configure("llm-a", ttft=0.3, tokens_per_second=20)
    started = time.monotonic()
    chat(client, mock)
    # ttft + 6 more tokens at 20/s = 0.6 s
    assert 0.55 <= time.monotonic() - started < 1.5


# -- faults -----------------------------------------------------------------------------------

def test_refuse_then_recover_on_the_same_port(mock: MockLLM, client: httpx.Client) -> None:
    port = mock.port("llm-a")
    mock.set_fault("llm-a", "refuse")
    with pytest.raises(httpx.ConnectError):
        client.get(mock.url("llm-a") + "/health")
    assert not port_listening(port)
    mock.set_fault("llm-a", "none")
    assert mock.port("llm-a") == port
    assert client.get(mock.url("llm-a") + "/health").status_code == 200
    assert chat(client, mock).status_code == 200


def test_refuse_for_seconds_reverts_by_itself(mock: MockLLM, client: httpx.Client) -> None:
    mock.set_fault("llm-a", "refuse", seconds=0.3)
    with pytest.raises(httpx.ConnectError):
        client.get(mock.url("llm-a") + "/health")
    time.sleep(0.6)
    assert client.get(mock.url("llm-a") + "/health").status_code == 200
    assert mock.config("llm-a")["fault"] == "none"


def test_container_can_start_refusing(mock: MockLLM, client: httpx.Client) -> None:
    added = mock.add_container(ContainerSpec(name="late", fault="refuse"))
    assert added["port"] > 0 and not added["listening"]
    assert not port_listening(added["port"])
    mock.set_fault("late", "none")
    assert client.get(mock.url("late") + "/health").status_code == 200


def test_error500_hits_chat_and_health(mock: MockLLM, client: httpx.Client) -> None:
    mock.set_fault("llm-a", "error500")
    response = chat(client, mock)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == 500
    assert client.get(mock.url("llm-a") + "/health").status_code == 500


def test_error400_context_length(mock: MockLLM, client: httpx.Client) -> None:
    mock.set_fault("llm-a", "error400")
    response = chat(client, mock, {**HELLO, "stream": True})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(
        "This model's maximum context length is 4096 tokens.")
    assert client.get(mock.url("llm-a") + "/health").status_code == 200


def test_ratelimit_with_retry_after(mock: MockLLM, client: httpx.Client) -> None:
    mock.configure("llm-a", fault="ratelimit", retry_after=7)
    response = chat(client, mock)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"


def test_hang_until_the_client_gives_up(mock: MockLLM, client: httpx.Client) -> None:
    mock.set_fault("llm-a", "hang")
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        chat(client, mock, timeout=0.3)
    with pytest.raises(httpx.ReadTimeout):
        client.get(mock.url("llm-a") + "/health", timeout=0.3)
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 3
    while mock.stats("llm-a")["by_status"] != {"499": 2} and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices the departed clients a moment later
    assert mock.stats("llm-a")["by_status"] == {"499": 2}
    assert mock.stats("llm-a")["in_flight"] == 0


@pytest.mark.parametrize("keep", [0, 3])
def test_drop_mid_stream_after_k_tokens(mock: MockLLM, client: httpx.Client, keep: int) -> None:
    mock.configure("llm-a", fault="drop_mid_stream", drop_after_tokens=keep)
    tokens: list[str] = []
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        with client.stream("POST", mock.url("llm-a") + CHAT, json={**HELLO, "stream": True}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    tokens += [delta["content"]] if delta.get("content") else []
    assert tokens == HELLO_TOKENS[:keep]


def test_drop_mid_stream_non_streaming(mock: MockLLM, client: httpx.Client) -> None:
    mock.set_fault("llm-a", "drop_mid_stream")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        chat(client, mock)


def test_bad_json(mock: MockLLM, client: httpx.Client) -> None:
    mock.set_fault("llm-a", "bad_json")
    response = chat(client, mock)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    with client.stream("POST", mock.url("llm-a") + CHAT, json={**HELLO, "stream": True}) as r:
        first = next(line for line in r.iter_lines() if line)
    with pytest.raises(json.JSONDecodeError):
        json.loads(first[len("data: "):])


def test_slow_health(mock: MockLLM, client: httpx.Client) -> None:
    mock.configure("llm-a", fault="slow_health", health_delay=0.4)
    started = time.monotonic()
    assert client.get(mock.url("llm-a") + "/health").status_code == 200
    assert time.monotonic() - started >= 0.4
    assert chat(client, mock).status_code == 200  # chat is not slowed


def test_fault_for_n_requests_then_normal(mock: MockLLM, client: httpx.Client) -> None:
    mock.set_fault("llm-a", "error500", requests=2)
    assert [chat(client, mock).status_code for _ in range(3)] == [500, 500, 200]
    assert mock.config("llm-a")["fault"] == "none"


# -- backend and control ------------------------------------------------------------------------

def test_models_deployed_format(mock: MockLLM, client: httpx.Client) -> None:
    listing = client.get(mock.backend_url + "/models/deployed/").json()
    assert set(listing) == {hashlib.sha256(n.encode()).hexdigest()
                            for n in ("llm-a", "llm-secure", "emb")}
    assert all(re.fullmatch(r"[0-9a-f]{64}", key) for key in listing)
    entry = listing[deploy_id("llm-a")]
    port = mock.port("llm-a")
    assert entry["name"] == "llm-a"
    assert (entry["status"], entry["health"], entry["model_type"]) == ("running", "healthy", "chat")
    assert entry["internal_url"] == f"127.0.0.1:{port}/v1/chat/completions"
    assert entry["health_url"] == f"127.0.0.1:{port}/health"
    assert entry["tool_calling_enabled"] is False
    assert entry["model_id"] == "id_tt-metal-Llama-3.1-8B-Instruct-v0.18.0"
    impl = entry["model_impl"]
    assert impl["model_name"] == "Llama-3.1-8B-Instruct"
    assert impl["hf_model_id"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert (impl["service_route"], impl["health_route"]) == ("/v1/chat/completions", "/health")
    assert impl["service_port"] == port
    emb = listing[deploy_id("emb")]
    assert emb["model_type"] == emb["model_impl"]["model_type"] == "embedding"
    # The listed URLs work once given a scheme, as discovery will do.
    assert client.get("http://" + entry["health_url"]).status_code == 200


@pytest.mark.parametrize("fault", ["error500", "bad_json", "hang"])
def test_backend_faults(mock: MockLLM, client: httpx.Client, fault: str) -> None:
    url = mock.backend_url + "/models/deployed/"
    mock.set_backend_fault(fault)
    if fault == "hang":
        with pytest.raises(httpx.ReadTimeout):
            client.get(url, timeout=0.3)
    elif fault == "error500":
        assert client.get(url).status_code == 500
    else:
        with pytest.raises(json.JSONDecodeError):
            client.get(url).json()
    mock.set_backend_fault("none")
    assert len(client.get(url).json()) == 3


def test_ollama_flavour(mock: MockLLM, client: httpx.Client) -> None:
    mock.add_container(ContainerSpec(name="oll", model_name="llama3.2:3b", flavor="ollama",
                                     ttft=0.0, tokens_per_second=0))
    url = mock.url("oll")
    tags = client.get(url + "/api/tags").json()
    assert [(m["name"], m["model"]) for m in tags["models"]] == [("llama3.2:3b", "llama3.2:3b")]
    assert tags["models"][0]["details"]["format"] == "gguf"
    assert client.get(url + "/api/version").json() == {"version": "0.5.0"}
    assert client.get(url + "/v1/models").json()["data"][0]["id"] == "llama3.2:3b"
    assert client.get(url + "/health").status_code == 404  # Ollama has no /health
    body = client.post(url + CHAT, json={**HELLO, "model": "llama3.2:3b"}).json()
    assert body["choices"][0]["message"]["content"] == "Hello from oll! You said: hi there"
    assert deploy_id("oll") not in client.get(mock.backend_url + "/models/deployed/").json()
    mock.set_fault("oll", "error500")  # health faults hit /api/version, Ollama's liveness check
    assert client.get(url + "/api/version").status_code == 500
    assert client.get(mock.url("llm-a") + "/health").status_code == 200  # default unchanged
    assert client.get(mock.url("llm-a") + "/api/tags").status_code == 404
    with pytest.raises(BadConfig):
        ContainerSpec(name="x", flavor="tgi")


def test_add_and_remove_container_at_run_time(mock: MockLLM, client: httpx.Client) -> None:
    added = mock.add_container(ContainerSpec(name="llm-new", model_name="Mistral-7B-Instruct",
                                             ttft=0.0, tokens_per_second=0))
    assert added["listening"]
    body = chat(client, mock, name="llm-new").json()
    assert body["choices"][0]["message"]["content"] == "Hello from llm-new! You said: hi there"
    listing = client.get(mock.backend_url + "/models/deployed/").json()
    assert listing[deploy_id("llm-new")]["model_impl"]["model_name"] == "Mistral-7B-Instruct"
    port = mock.port("llm-new")
    mock.remove_container("llm-new")
    assert not port_listening(port)
    assert deploy_id("llm-new") not in client.get(mock.backend_url + "/models/deployed/").json()
    with pytest.raises(UnknownContainer):
        mock.stats("llm-new")


def test_control_api_over_http(mock: MockLLM, client: httpx.Client) -> None:
    base = mock.backend_url + "/_mock"
    port = free_port()
    spec = {"name": "http-new", "model_name": "Qwen2.5-7B", "hf_model_id": "Qwen/Qwen2.5-7B",
            "model_type": "chat", "port": port, "token": "t0k", "ttft": 0.0}
    created = client.post(base + "/containers", json=spec)
    assert created.status_code == 200, created.text
    assert created.json()["url"] == f"http://127.0.0.1:{port}"
    assert created.json()["spec"]["token"] == "set"  # never echoed
    names = [c["name"] for c in client.get(base + "/containers").json()["containers"]]
    assert names == ["llm-a", "llm-secure", "emb", "http-new"]
    config = client.post(base + "/containers/http-new/config", json={"ttft": 0.2}).json()
    assert config["ttft"] == 0.2
    assert client.get(base + "/containers/http-new/stats").json()["requests"] == 0
    assert client.post(base + "/containers/http-new/reset").status_code == 200
    assert client.delete(base + "/containers/http-new").status_code == 200
    assert not port_listening(port)


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/containers/llm-a/config", {"nope": 1}, 400),
    ("POST", "/containers/llm-a/config", {"fault": "explode"}, 400),
    ("POST", "/containers/llm-a/config", {"ttft": -1}, 400),
    ("POST", "/containers/llm-a/config", {"fault": "refuse", "fault_requests": 2}, 400),
    ("POST", "/containers/llm-a/config", [1, 2], 400),
    ("GET", "/containers/ghost/stats", None, 404),
    ("DELETE", "/containers/ghost", None, 404),
    ("POST", "/containers", {"model_name": "no name"}, 400),
    ("POST", "/containers", {"name": "x", "colour": "red"}, 400),
    ("POST", "/containers", {"name": "llm-a"}, 409),
    ("POST", "/backend", {"fault": "refuse"}, 400),
])
def test_bad_control_input_gets_4xx(mock: MockLLM, client: httpx.Client, method: str, path: str,
                                     body: Any, status: int) -> None:
    response = client.request(method, mock.backend_url + "/_mock" + path, json=body)
    assert response.status_code == status
    assert response.json()["error"]
    assert mock.config("llm-a")["fault"] == "none"


def test_python_api_errors(mock: MockLLM) -> None:
    with pytest.raises(BadConfig):
        mock.configure("llm-a", tokens_per_second="fast")
    with pytest.raises(UnknownContainer):
        mock.set_fault("ghost", "none")
    with pytest.raises(Conflict):
        mock.add_container(ContainerSpec(name="llm-b", port=mock.port("llm-a")))


def test_container_own_control_routes(mock: MockLLM, client: httpx.Client) -> None:
    url = mock.url("llm-a")
    assert client.post(url + "/_mock/config", json={"reply": "own"}).json()["reply"] == "own"
    assert chat(client, mock).json()["choices"][0]["message"]["content"] == "own"
    assert client.get(url + "/_mock/stats").json()["chat_requests"] == 1
    assert client.post(url + "/_mock/config", json={"fault": "refuse"}).status_code == 200
    deadline = time.monotonic() + 5
    while port_listening(mock.port("llm-a")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not port_listening(mock.port("llm-a"))


def test_port_taken_raises_clearly() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(Conflict, match=str(port)):
            MockLLM([ContainerSpec(name="x", port=port)]).start()


def test_stop_closes_every_port() -> None:
    mock = MockLLM([ContainerSpec(name="a"), ContainerSpec(name="b")]).start()
    ports = [mock.port("a"), mock.port("b"), mock.control_port]
    assert all(port_listening(p) for p in ports if p)
    mock.configure("a", fault="hang")
    with ThreadPoolExecutor(1) as pool:  # a hanging request must not hold up the stop
        pending = pool.submit(httpx.get, mock.url("a") + "/health", timeout=10)
        time.sleep(0.2)
        started = time.monotonic()
        mock.stop()
        assert time.monotonic() - started < 5
        assert not any(port_listening(p) for p in ports if p)
        assert pending.exception(timeout=5) is not None or pending.result().status_code == 504


# -- the CLI as a real process -------------------------------------------------------------------

def test_cli_subprocess_driven_by_mock_control(tmp_path: Path) -> None:
    port, control = free_port(), free_port()
    llmpool = Path(sys.executable).parent / "llmpool"
    argv = [str(llmpool), "mock-llm", "--port", str(port), "--control-port", str(control),
            "--ttft", "0", "--tps", "0", "--extra-containers", "1"]
    env = {**os.environ, "MOCK_LLM_TOKEN": TOKEN}
    log = (tmp_path / "mock.log").open("w+")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        with MockControl(f"http://127.0.0.1:{control}") as ctl:
            ctl.wait_ready(timeout=15)
            assert ctl.names()[0] == "mock-llm" and len(ctl.names()) == 2
            url = ctl.url("mock-llm")
            assert url == f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {TOKEN}"}
            reply = httpx.post(url + CHAT, json=HELLO, headers=headers, timeout=5).json()
            assert reply["choices"][0]["message"]["content"].startswith("Hello from mock-llm!")
            assert ctl.stats("mock-llm")["last_authorization"] == f"Bearer {TOKEN}"
            ctl.set_fault("mock-llm", "refuse")
            with pytest.raises(httpx.ConnectError):
                httpx.get(url + "/health", timeout=2)
            ctl.set_fault("mock-llm", "none")
            assert httpx.get(url + "/health", timeout=2).status_code == 200
            with pytest.raises(UnknownContainer):
                ctl.stats("ghost")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert not port_listening(port) and not port_listening(control)
        log.seek(0)
        output = log.read()
        assert f"http://127.0.0.1:{port}/v1/chat/completions" in output
        assert TOKEN not in output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        log.close()
