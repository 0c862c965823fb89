"""The mock LLM's server flavours (llmpool.dev.mock_llm.flavors), each read by llmpool's own code:
discovery learns the kind, slots and quantization; the prober sees loading as starting; the load
reader sees the queue. The mock runs on a thread (no process)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from llmpool.admission import limits_for
from llmpool.dev.mock_llm import BadConfig, ContainerSpec, MockLLM
from llmpool.discovery import read_ollama_server, read_openai_server
from llmpool.discovery.openai_servers import learn_kind
from llmpool.endpoints import local_endpoint
from llmpool.health import Health, next_health
from llmpool.prober import probe
from llmpool.server_load import ServerLoad, read_load, read_loads
from llmpool.settings import load_settings
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(30)

SPECS = [
    ContainerSpec(name="cpp", flavor="llamacpp", hf_model_id="/models/tiny.Q8_0.gguf", ttft=0.0, tokens_per_second=0),
    ContainerSpec(name="v1", flavor="vllm", hf_model_id="org/m", ttft=0.0, tokens_per_second=0),
    ContainerSpec(name="v2", flavor="vllm", hf_model_id="org/m", ttft=0.0, tokens_per_second=0),
    ContainerSpec(name="lms", flavor="lmstudio", hf_model_id="qwen/qwen3-8b", quantization="Q6_K"),
    ContainerSpec(name="lcp", flavor="llama-cpp-python", hf_model_id="/models/llama-3-8b.Q5_K_M.gguf"),
    ContainerSpec(name="oll", flavor="ollama", model_name="llama3.1:8b-instruct-q8_0", quantization="Q8_0",
                  parameter_size="8.0B"),
]


@pytest.fixture(scope="module")
def mock() -> Iterator[MockLLM]:
    with MockLLM(SPECS, backend=False) as running:
        yield running


@pytest.fixture(autouse=True)
def plain(mock: MockLLM) -> Iterator[None]:
    yield
    for name in ("cpp", "lms", "oll"):
        mock.configure(name, loading=False, slots=1, ttft=0.0)
    for name in ("v1", "v2"):
        mock.configure(name, external_running=0, external_waiting=0)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def test_llamacpp_is_known_with_its_slots_and_quantization(mock: MockLLM, http: httpx.Client) -> None:
    mock.configure("cpp", slots=3)
    result = read_openai_server(mock.url("cpp"), http=http, timeout=5)
    assert result.ok
    [endpoint] = result.endpoints
    assert (endpoint.kind, endpoint.slots, endpoint.quantization) == ("llamacpp", 3, "Q8_0")


def test_llama_cpp_python_is_known_with_one_slot(mock: MockLLM, http: httpx.Client) -> None:
    [endpoint] = read_openai_server(mock.url("lcp"), http=http, timeout=5).endpoints
    assert (endpoint.kind, endpoint.slots, endpoint.quantization) == ("llama-cpp-python", 1, "Q5_K_M")
    assert limits_for(endpoint, load_settings(_env_file=None)).max_concurrency == 1


def test_llamacpp_loading_is_starting_then_healthy(mock: MockLLM, http: httpx.Client) -> None:
    [endpoint] = read_openai_server(mock.url("cpp"), http=http, timeout=5).endpoints
    mock.configure("cpp", loading=True)
    health = Health(state="healthy")
    for n in range(5):  # more probes than AGENT_MAX_FAILURES
        result = probe(endpoint, http=http, timeout=5)
        assert (result.ok, result.starting, result.status) == (False, True, 503)
        health = next_health(health, result, now=float(n), max_failures=3, recovery_successes=2)
        assert health.state == "starting"
    chat = http.post(mock.url("cpp") + "/v1/chat/completions", json={"model": "m", "messages": []})
    assert chat.status_code == 503 and chat.json()["error"]["message"] == "Loading model"
    mock.configure("cpp", loading=False)
    health = next_health(health, probe(endpoint, http=http, timeout=5), now=9.0, max_failures=3,
                         recovery_successes=2)
    assert health.state == "healthy"


def test_llamacpp_queues_past_its_slots_and_slots_show_it(mock: MockLLM, http: httpx.Client) -> None:
    [endpoint] = read_openai_server(mock.url("cpp"), http=http, timeout=5).endpoints
    mock.configure("cpp", slots=1, ttft=1.0)
    body = {"model": endpoint.model, "messages": [{"role": "user", "content": "hi"}]}
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(
        http.post(endpoint.chat_url, json=body, timeout=15).status_code)) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: mock.stats("cpp")["in_flight"] == 3, timeout=5, what="three chats at the server")
    # Three requests at the server, one slot: one runs, two wait (as llama.cpp queues them).
    assert read_load(http, endpoint, timeout=5) == ServerLoad(running=1, slots=1)
    for thread in threads:
        thread.join(15)
    assert answers == [200, 200, 200]
    assert read_load(http, endpoint, timeout=5) == ServerLoad(running=0, slots=1)


def test_vllm_metrics_show_in_flight_and_other_clients(mock: MockLLM, http: httpx.Client) -> None:
    [e1] = read_openai_server(mock.url("v1"), http=http, timeout=5).endpoints
    [e2] = read_openai_server(mock.url("v2"), http=http, timeout=5).endpoints
    assert e1.kind == e2.kind == "vllm"
    mock.configure("v1", external_running=4, external_waiting=2)
    loads = read_loads(http, [e1, e2], timeout=5)
    first = (loads[e1.id].running, loads[e1.id].waiting, loads[e1.id].cache_use)
    assert first == (4, 2, pytest.approx(0.3))
    assert (loads[e2.id].running, loads[e2.id].waiting, loads[e2.id].cache_use) == (0, 0, 0.0)
    generated = loads[e2.id].generated
    assert generated is not None
    assert http.post(e2.chat_url, json={"model": e2.model, "messages": [{"role": "user", "content": "hi"}]},
                     timeout=10).status_code == 200
    assert read_loads(http, [e2], timeout=5)[e2.id].generated == generated + 1  # the counter moves with work
    assert loads[e1.id].overloaded and not loads[e2.id].overloaded


def test_lmstudio_not_loaded_is_starting(mock: MockLLM, http: httpx.Client) -> None:
    [endpoint] = read_openai_server(mock.url("lms"), http=http, timeout=5).endpoints
    assert endpoint.kind == "lmstudio" and endpoint.health_url == mock.url("lms") + "/api/v0/models/qwen%2Fqwen3-8b"
    assert probe(endpoint, http=http, timeout=5).ok
    mock.configure("lms", loading=True)
    result = probe(endpoint, http=http, timeout=5)
    assert (result.ok, result.starting, result.error) == (False, True, "model not-loaded")
    listing = http.get(mock.url("lms") + "/api/v0/models").json()["data"][0]
    assert (listing["state"], listing["quantization"]) == ("not-loaded", "Q6_K")
    older = replace(endpoint, health_url=mock.url("lms") + "/api/v0/models/gone")  # 404: no /api/v0 here
    result = probe(older, http=http, timeout=5)
    assert result.ok and result.url == mock.url("lms") + "/v1/models"  # its listing answers instead


def test_ollama_tags_and_ps(mock: MockLLM, http: httpx.Client) -> None:
    [endpoint] = read_ollama_server(mock.url("oll"), http=http, timeout=5).endpoints
    assert (endpoint.kind, endpoint.quantization) == ("ollama", "Q8_0")
    tag = http.get(mock.url("oll") + "/api/tags").json()["models"][0]
    assert tag["details"]["parameter_size"] == "8.0B"
    assert [m["name"] for m in http.get(mock.url("oll") + "/api/ps").json()["models"]] == [endpoint.model]
    mock.configure("oll", loading=True)
    assert http.get(mock.url("oll") + "/api/ps").json()["models"] == []


@pytest.mark.parametrize(("knob", "value"), [("loading", 1), ("slots", -1), ("external_waiting", 1.5)])
def test_flavour_knobs_are_checked(mock: MockLLM, knob: str, value: object) -> None:
    with pytest.raises(BadConfig, match=knob):
        mock.configure("cpp", **{knob: value})


def test_an_unknown_flavour_is_refused() -> None:
    with pytest.raises(BadConfig, match="flavor"):
        ContainerSpec(name="x", flavor="tgi-ish")


def test_a_container_docker_calls_starting_fails_its_probe_as_starting(mock: MockLLM, http: httpx.Client) -> None:
    [endpoint] = read_openai_server(mock.url("v1"), http=http, timeout=5).endpoints
    broken = replace(endpoint, health_url=mock.url("v1") + "/not-ready")  # 404 while it warms up
    assert not probe(broken, http=http, timeout=5).starting
    result = probe(replace(broken, container_starting=True), http=http, timeout=5)
    assert (result.ok, result.starting, result.error) == (False, True, "container starting (HTTP 404)")


def test_an_endpoint_the_settings_name_learns_its_kind_and_slots(mock: MockLLM, http: httpx.Client) -> None:
    port = mock.port("cpp")
    mock.configure("cpp", slots=2)
    local = local_endpoint(load_settings(_env_file=None, local_llm_host="127.0.0.1", local_llm_port=port))
    learned = learn_kind(local, http=http, timeout=5)
    assert (local.kind, learned.kind, learned.slots) == ("unknown", "llamacpp", 2)
    nobody = local_endpoint(load_settings(_env_file=None, local_llm_host="127.0.0.1", local_llm_port=_free_port()))
    assert learn_kind(nobody, http=http, timeout=2) == nobody  # down: nothing learned, nothing lost


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _usage_of(http: httpx.Client, url: str, *, stream: bool) -> list[object]:
    """The usage each chunk (stream) or the whole answer carries, asked for as llmpool asks."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
            "stream_options": {"include_usage": True}}
    if not stream:
        return [http.post(url, json={**body, "stream": False}, timeout=5).json().get("usage")]
    with http.stream("POST", url, json=body, timeout=5) as resp:
        lines = [line.removeprefix("data: ") for line in resp.iter_lines() if line.startswith("data: {")]
    return [json.loads(line).get("usage") for line in lines]


def test_llama_cpp_python_sends_usage_in_whole_answers_and_never_in_streams(mock: MockLLM,
                                                                            http: httpx.Client) -> None:
    url = mock.url("lcp") + "/v1/chat/completions"
    whole = _usage_of(http, url, stream=False)[0]
    assert isinstance(whole, dict) and whole["completion_tokens"] > 0
    streamed = _usage_of(http, url, stream=True)
    assert streamed and not any(streamed)
    assert any(_usage_of(http, mock.url("v1") + "/v1/chat/completions", stream=True))  # vLLM's do
    mock.configure("lcp", send_usage=False)  # the "no usage anywhere" knob
    try:
        assert _usage_of(http, url, stream=False) == [None]
    finally:
        mock.configure("lcp", send_usage=True)


def test_llama_cpp_python_answers_what_its_request_model_refuses_with_a_500(mock: MockLLM,
                                                                            http: httpx.Client) -> None:
    url = mock.url("lcp") + "/v1/chat/completions"
    developer = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]
    refused = http.post(url, json={"model": "m", "messages": developer}, timeout=5)
    assert refused.status_code == 500 and "developer" in refused.json()["error"]["message"]
    system = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert http.post(url, json={"model": "m", "messages": system}, timeout=5).status_code == 200
    assert http.post(mock.url("v1") + "/v1/chat/completions", json={"model": "m", "messages": developer},
                     timeout=5).status_code == 200  # vLLM's flavour takes it
