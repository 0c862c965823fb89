"""Discovery over real HTTP (the mock LLM and its TT-Studio backend) with a real Redis cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import free_port
from llmpool.discovery import (
    SourceResult,
    discover_all,
    discover_backend,
    read_ollama_server,
    read_openai_server,
)
from llmpool.keys import Keys
from llmpool.settings import Settings

pytestmark = pytest.mark.timeout(60)

HEALTH_TIMEOUT = 0.25  # so the backend's timeout (twice this) is 0.5 s
BACKEND_TIMEOUT = 2 * HEALTH_TIMEOUT
KEYS = Keys()
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockLLM]:
    specs = [
        ContainerSpec(name="llm-a", ttft=0.0, tokens_per_second=0),
        ContainerSpec(name="llm-b", model_name="Mistral-7B-Instruct-v0.3",
                      hf_model_id="mistralai/Mistral-7B-Instruct-v0.3", tool_calling_enabled=True),
        ContainerSpec(name="emb", model_name="bge-large-en", hf_model_id="BAAI/bge-large-en",
                      model_type="embedding"),
        ContainerSpec(name="stopped", model_name="Llama-3.1-70B-Instruct", status="exited"),
        ContainerSpec(name="oll", model_name="llama3.2:3b", flavor="ollama", ttft=0.0,
                      tokens_per_second=0),
    ]
    with MockLLM(specs) as running:
        yield running


@pytest.fixture(autouse=True)
def backend_ok(mock: MockLLM) -> Iterator[None]:
    """Every test starts and ends with a healthy backend (the mock is shared by the module)."""
    mock.set_backend_fault("none")
    yield
    mock.set_backend_fault("none")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def make_settings(mock: MockLLM, **values: Any) -> Settings:
    """Settings for `mock`'s backend with short timeouts; no .env file, every value named."""
    base: dict[str, Any] = {
        "agent_backend_url": mock.backend_url, "agent_health_check_timeout": HEALTH_TIMEOUT,
        "agent_discovery_cache_ttl": 30, "agent_auto_discovery": True,
        "agent_fallback_to_local": True, "llm_container_name": None, "use_cloud_llm": False,
        "agent_fallback_to_cloud": False, "agent_openai_servers": [], "agent_ollama_servers": [],
    }
    return Settings(_env_file=None, **(base | values))  # type: ignore[call-arg]


def backend(mock: MockLLM, http: httpx.Client, redis_client: redis.Redis, *, force: bool = False,
            **values: Any) -> SourceResult:
    return discover_backend(make_settings(mock, **values), http=http, redis=redis_client,
                            keys=KEYS, force=force)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# -- the backend --------------------------------------------------------------------------------

def test_backend_lists_running_chat_containers(mock: MockLLM, http: httpx.Client,
                                               redis_client: redis.Redis) -> None:
    result = backend(mock, http, redis_client)
    assert (result.source, result.ok, result.error) == ("backend", True, None)
    by_name = {e.container_name: e for e in result.endpoints}
    assert set(by_name) == {"llm-a", "llm-b"}  # no embedding, no exited container, no Ollama
    a, b = by_name["llm-a"], by_name["llm-b"]
    assert (a.id, a.deploy_id) == (deploy_id("llm-a"), deploy_id("llm-a"))
    assert a.chat_url == mock.url("llm-a") + CHAT
    assert a.health_url == mock.url("llm-a") + "/health"
    assert (a.model, a.model_name) == ("meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct")
    assert (a.source, a.flavor, a.auth, a.tool_calling) == ("discovered", "vllm", "container", False)
    assert (b.model, b.tool_calling) == ("mistralai/Mistral-7B-Instruct-v0.3", True)
    # The discovered URLs are the container's real ones.
    assert http.get(a.health_url).status_code == 200
    answer = http.post(a.chat_url, json={"model": a.model, "messages": [
        {"role": "user", "content": "hi"}]})
    assert answer.json()["choices"][0]["message"]["content"] == "Hello from llm-a! You said: hi"


@pytest.mark.parametrize(("fault", "error"), [
    ("error500", "HTTP 500"),
    ("bad_json", "invalid JSON"),
    ("hang", f"no answer within {BACKEND_TIMEOUT:g}s"),
])
def test_backend_faults_are_not_ok_quickly_and_not_cached(
        mock: MockLLM, http: httpx.Client, redis_client: redis.Redis, fault: str, error: str) -> None:
    mock.set_backend_fault(fault)
    started = time.monotonic()
    result = backend(mock, http, redis_client)
    assert time.monotonic() - started < BACKEND_TIMEOUT + 0.5
    assert (result.ok, result.endpoints, result.error) == (False, [], error)
    assert redis_client.exists(KEYS.discovery_cache("backend")) == 0


def test_backend_unreachable(mock: MockLLM, http: httpx.Client, redis_client: redis.Redis) -> None:
    result = backend(mock, http, redis_client, agent_backend_url=dead_url())
    assert (result.ok, result.error) == (False, "cannot connect")


def test_backend_cache_serves_within_ttl_and_force_bypasses_it(
        mock: MockLLM, http: httpx.Client, redis_client: redis.Redis) -> None:
    first = backend(mock, http, redis_client)
    key = KEYS.discovery_cache("backend")
    assert 29 <= redis_client.ttl(key) <= 30
    mock.add_container(ContainerSpec(name="llm-new", model_name="Qwen2.5-7B"))
    try:
        # A broken backend proves the cached answer is served without asking it.
        mock.set_backend_fault("error500")
        assert backend(mock, http, redis_client) == first
        forced = backend(mock, http, redis_client, force=True)
        assert (forced.ok, forced.error) == (False, "HTTP 500")  # force asks the backend...
        assert backend(mock, http, redis_client) == first  # ...and a failure keeps the cache
        mock.set_backend_fault("none")
        forced = backend(mock, http, redis_client, force=True)
        assert forced.ok
        assert {e.container_name for e in forced.endpoints} == {"llm-a", "llm-b", "llm-new"}
        assert backend(mock, http, redis_client) == forced  # the forced answer is cached
    finally:
        mock.remove_container("llm-new")


def test_backend_cache_expires_after_the_ttl(mock: MockLLM, http: httpx.Client,
                                             redis_client: redis.Redis) -> None:
    assert backend(mock, http, redis_client, agent_discovery_cache_ttl=0.3).ok
    mock.set_backend_fault("error500")
    assert backend(mock, http, redis_client, agent_discovery_cache_ttl=0.3).ok
    time.sleep(0.4)
    assert not backend(mock, http, redis_client, agent_discovery_cache_ttl=0.3).ok


def test_backend_without_redis_still_discovers(mock: MockLLM, http: httpx.Client) -> None:
    # No retries: redis-py's default backoff would only make the test slow.
    dead_redis = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    result = backend(mock, http, dead_redis)
    assert result.ok and {e.container_name for e in result.endpoints} == {"llm-a", "llm-b"}


# -- OpenAI-compatible and Ollama servers ----------------------------------------------------------

def test_openai_servers_one_down(mock: MockLLM, http: httpx.Client) -> None:
    alive, dead = mock.url("llm-b"), dead_url()
    up = read_openai_server(alive, http=http, timeout=HEALTH_TIMEOUT)
    down = read_openai_server(dead, http=http, timeout=HEALTH_TIMEOUT)
    assert (up.source, up.ok) == (f"openai:{alive}", True)
    [endpoint] = up.endpoints
    model = "mistralai/Mistral-7B-Instruct-v0.3"
    assert (endpoint.id, endpoint.chat_url) == (f"openai:{alive}#{model}", alive + CHAT)
    assert (endpoint.model, endpoint.source, endpoint.flavor) == (model, "openai", "openai")
    assert (down.source, down.ok, down.endpoints, down.error) == (
        f"openai:{dead}", False, [], "cannot connect")


def test_ollama_server(mock: MockLLM, http: httpx.Client) -> None:
    base = mock.url("oll")
    result = read_ollama_server(base, http=http, timeout=HEALTH_TIMEOUT)
    assert (result.source, result.ok) == (f"ollama:{base}", True)
    [endpoint] = result.endpoints
    assert (endpoint.id, endpoint.model, endpoint.auth) == (f"ollama:{base}#llama3.2:3b",
                                                            "llama3.2:3b", "none")
    assert endpoint.health_url is not None
    assert http.get(endpoint.health_url).json() == {"version": "0.5.0"}
    answer = http.post(endpoint.chat_url, json={"model": endpoint.model, "messages": [
        {"role": "user", "content": "hi"}]})
    assert answer.json()["choices"][0]["message"]["content"] == "Hello from oll! You said: hi"
    # An OpenAI-flavoured server has no /api/tags.
    assert read_ollama_server(mock.url("llm-a"), http=http, timeout=HEALTH_TIMEOUT).error == "HTTP 404"


# -- every source at once ---------------------------------------------------------------------------

def test_discover_all_with_a_hung_backend_returns_the_other_sources(
        mock: MockLLM, http: httpx.Client, redis_client: redis.Redis) -> None:
    dead = dead_url()
    settings = make_settings(
        mock, llm_container_name="llm-a",
        agent_openai_servers=f"{mock.url('llm-b')},{dead}", agent_ollama_servers=mock.url("oll"))
    mock.set_backend_fault("hang")
    started = time.monotonic()
    results = discover_all(settings, http=http, redis=redis_client, keys=KEYS)
    assert time.monotonic() - started < BACKEND_TIMEOUT + 0.5
    assert [(r.source, r.ok) for r in results] == [
        ("static", True), ("backend", False), (f"openai:{mock.url('llm-b')}", True),
        (f"openai:{dead}", False), (f"ollama:{mock.url('oll')}", True),
    ]
    assert [e.id for e in results[0].endpoints] == ["container:llm-a", "local"]
    assert results[2].endpoints[0].model == "mistralai/Mistral-7B-Instruct-v0.3"
    assert results[4].endpoints[0].model == "llama3.2:3b"


def test_discover_all_force_and_auto_discovery_off(mock: MockLLM, http: httpx.Client,
                                                   redis_client: redis.Redis) -> None:
    settings = make_settings(mock)
    first = discover_all(settings, http=http, redis=redis_client, keys=KEYS)
    assert [(r.source, r.ok) for r in first] == [("static", True), ("backend", True)]
    mock.set_backend_fault("error500")
    assert discover_all(settings, http=http, redis=redis_client, keys=KEYS) == first  # cached
    forced = discover_all(settings, http=http, redis=redis_client, keys=KEYS, force=True)
    assert (forced[1].ok, forced[1].error) == (False, "HTTP 500")
    off = make_settings(mock, agent_auto_discovery=False)
    assert [r.source for r in discover_all(off, http=http, redis=redis_client, keys=KEYS)] == ["static"]
