"""Discovery parsing: the backend's deployed-models JSON, /v1/models, /api/tags, static settings."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from llmpool.discovery import parse_deployed, parse_models, parse_tags
from llmpool.discovery.source import SourceFailed, with_scheme
from llmpool.discovery.static import discover_static
from llmpool.endpoints import Endpoint
from llmpool.errors import ConfigError
from llmpool.settings import Settings, load_settings

DEPLOY_ID = "1d1a274a71264bd2c4a1a6e4e1b7f6c3a8d9e0f1a2b3c4d5e6f708192a3b4c5d"
NAME = "tt-metal-llama-3.1-8b-instruct-p7000"

# The reference entry of tt-studio-interface.md, every field as the real backend sends it.
REFERENCE: dict[str, Any] = {
    "name": NAME, "status": "running", "health": "healthy", "create": "2025-06-01T10:00:00Z",
    "image_id": "sha256:0d7f2a", "image_name": "ghcr.io/tenstorrent/tt-inference-server/vllm:0.18.0",
    "port_bindings": {"7000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "7000"}]},
    "networks": {"tt_studio_network": {"DNSNames": [NAME, "1d1a274a7126"]}},
    "device_id": 0, "device_ids": [0],
    "model_id": "id_tt-metal-Llama-3.1-8B-Instruct-v0.18.0", "weights_id": None,
    "model_impl": {
        "model_name": "Llama-3.1-8B-Instruct", "hf_model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "model_type": "chat", "service_route": "/v1/chat/completions", "health_route": "/health",
        "service_port": 7000, "setup_type": 3, "device_configurations": ["N150", "N300", "T3K"],
        "image_name": "ghcr.io/tenstorrent/tt-inference-server/vllm", "image_tag": "0.18.0",
        "impl_id": "tt-metal", "version": "0.18.0", "shm_size": "32G", "env_file": "",
        "display_model_type": "LLM", "inference_engine": "vLLM", "param_count": 8,
    },
    "internal_url": f"{NAME}:7000/v1/chat/completions", "health_url": f"{NAME}:7000/health",
    "deployed_at": "2025-06-01T10:00:05Z", "stopped_by_user": False, "tool_calling_enabled": False,
    "coding_agent_eligible": True, "model_type": "chat",
}
NON_CHAT_TYPES = ["vlm", "tts", "embedding", "image_generation", "video_generation",
                  "object_detection", "speech_recognition", "face_recognition", "cnn", "mock"]


def _edited(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with `changes`; a value of ... removes the field."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def entry(**changes: Any) -> dict[str, Any]:
    """The reference entry with top-level `changes`."""
    return _edited(REFERENCE, changes)


def impl(**changes: Any) -> dict[str, Any]:
    """The reference model_impl with `changes`."""
    return _edited(REFERENCE["model_impl"], changes)


def one(raw: dict[str, Any]) -> Endpoint | None:
    """The endpoint parsed from a listing holding only `raw`, or None if it was skipped."""
    endpoints = parse_deployed({DEPLOY_ID: raw})
    assert len(endpoints) <= 1
    return endpoints[0] if endpoints else None


def settings(**values: Any) -> Settings:
    """Settings from `values` and defaults only: no .env file."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# -- the backend's deployed models ------------------------------------------------------------

def test_reference_entry() -> None:
    assert one(REFERENCE) == Endpoint(
        id=DEPLOY_ID, deploy_id=DEPLOY_ID, container_name=NAME,
        chat_url=f"http://{NAME}:7000/v1/chat/completions", health_url=f"http://{NAME}:7000/health",
        model="meta-llama/Llama-3.1-8B-Instruct", model_name="Llama-3.1-8B-Instruct",
        source="discovered", flavor="vllm", auth="container", model_type="chat", tool_calling=False, kind="tt-studio",
    )


@pytest.mark.parametrize("model_type", NON_CHAT_TYPES)
def test_non_chat_types_are_skipped(model_type: str) -> None:
    assert one(entry(model_type=model_type, model_impl=impl(model_type=model_type))) is None


@pytest.mark.parametrize(("top", "inner", "kept"), [
    ("chat", "chat", True),
    ("chat", ..., True),
    (..., "chat", True),            # older entries carry the type in model_impl only
    (None, "chat", True),
    ("Chat", ..., True),
    ("embedding", "chat", False),   # the entry's own type wins
    ("chat", "embedding", True),
    (..., ..., False),              # no type at all: not known to be chat
    ("", "", False),
])
def test_model_type_entry_first_then_model_impl(top: Any, inner: Any, kept: bool) -> None:
    assert (one(entry(model_type=top, model_impl=impl(model_type=inner))) is not None) is kept


@pytest.mark.parametrize(("status", "kept"), [
    ("running", True), ("RUNNING", True), (..., True), (None, True),
    ("exited", False), ("restarting", False), ("created", False), ("paused", False), ("dead", False),
])
def test_only_running_or_unknown_status_is_kept(status: Any, kept: bool) -> None:
    assert (one(entry(status=status)) is not None) is kept


@pytest.mark.parametrize(("broken", "problem"), [
    (entry(name=...), "name: Field required"),
    (entry(name=""), "name: String should have at least 1 character"),
    (entry(name=7), "name: Input should be a valid string"),
    (entry(model_impl=...), "model_impl: Field required"),
    (entry(model_impl="llama"), "model_impl: Input should be a valid dictionary"),
    (entry(model_impl=impl(model_name=...)), "model_impl.model_name: Field required"),
    (entry(internal_url=...), "internal_url: Field required"),
    (entry(internal_url=None), "internal_url: Input should be a valid string"),
    (entry(tool_calling_enabled="sometimes"), "tool_calling_enabled: Input should be a valid boolean"),
    ("not an object", "entry: Input should be a valid dictionary"),
    (None, "entry: Input should be a valid dictionary"),
])
def test_invalid_entry_is_skipped_with_a_warning_and_the_others_kept(
        broken: Any, problem: str, caplog: pytest.LogCaptureFixture) -> None:
    good_id = "f" * 64
    with caplog.at_level(logging.WARNING, logger="llmpool.discovery"):
        endpoints = parse_deployed({"0" * 64: broken, good_id: REFERENCE})
    assert [e.id for e in endpoints] == [good_id]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "0" * 64 in record.getMessage()
    assert problem in record.getMessage()


def test_quiet_parse_logs_invalid_entries_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="llmpool.discovery"):
        assert parse_deployed({DEPLOY_ID: entry(name=...)}, quiet=True) == []
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


@pytest.mark.parametrize(("internal_url", "health_url", "chat_url", "health"), [
    ("h:7000/v1/chat/completions", "h:7000/health",
     "http://h:7000/v1/chat/completions", "http://h:7000/health"),
    ("http://h:7000/v1/chat/completions", "http://h:7000/health",
     "http://h:7000/v1/chat/completions", "http://h:7000/health"),
    ("https://h/v1/chat/completions", "HTTPS://h/health",
     "https://h/v1/chat/completions", "HTTPS://h/health"),
    ("10.0.0.5:7001/v1/chat/completions", None, "http://10.0.0.5:7001/v1/chat/completions", None),
    ("h:7000/v1/chat/completions", "", "http://h:7000/v1/chat/completions", None),
    ("h:7000/v1/chat/completions", ..., "http://h:7000/v1/chat/completions", None),
])
def test_scheme_is_prepended_unless_present(internal_url: str, health_url: Any, chat_url: str,
                                           health: str | None) -> None:
    endpoint = one(entry(internal_url=internal_url, health_url=health_url))
    assert endpoint is not None
    assert (endpoint.chat_url, endpoint.health_url) == (chat_url, health)
    assert endpoint.base_url == chat_url.removesuffix("/v1/chat/completions")


@pytest.mark.parametrize(("hf_model_id", "model"), [
    ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    (None, "Llama-3.1-8B-Instruct"),
    ("", "Llama-3.1-8B-Instruct"),
    (..., "Llama-3.1-8B-Instruct"),
])
def test_model_is_hf_model_id_else_model_name(hf_model_id: Any, model: str) -> None:
    endpoint = one(entry(model_impl=impl(hf_model_id=hf_model_id)))
    assert endpoint is not None
    assert (endpoint.model, endpoint.model_name) == (model, "Llama-3.1-8B-Instruct")


@pytest.mark.parametrize(("value", "tool_calling"), [(True, True), (False, False), (None, False),
                                                     (..., False)])
def test_tool_calling(value: Any, tool_calling: bool) -> None:
    endpoint = one(entry(tool_calling_enabled=value))
    assert endpoint is not None and endpoint.tool_calling is tool_calling


def test_several_entries_keep_their_order() -> None:
    listing = {str(i) * 64: entry(name=f"c{i}") for i in range(1, 4)}
    listing["9" * 64] = entry(model_type="tts")
    assert [e.container_name for e in parse_deployed(listing)] == ["c1", "c2", "c3"]


@pytest.mark.parametrize(("data", "kind"), [
    ([REFERENCE], "an array"), ("deployed", "a string"), (42, "a number"), (None, "null"),
    (True, "a boolean"),
])
def test_top_level_must_be_an_object(data: Any, kind: str) -> None:
    with pytest.raises(SourceFailed, match=f"expected a JSON object keyed by deploy id, got {kind}"):
        parse_deployed(data)


def test_empty_listing_is_no_endpoints() -> None:
    assert parse_deployed({}) == []


@pytest.mark.parametrize(("address", "url"), [
    ("h:1/x", "http://h:1/x"), ("http://h", "http://h"), ("https://h", "https://h"),
    ("Http://h", "Http://h"),
])
def test_with_scheme(address: str, url: str) -> None:
    assert with_scheme(address) == url


# -- OpenAI-compatible /v1/models ---------------------------------------------------------------

BASE = "http://gpu-box:8000"


def test_openai_models() -> None:
    data = {"object": "list", "data": [
        {"id": "Qwen/Qwen2.5-7B", "object": "model", "owned_by": "vllm"},
        {"id": "meta-llama/Llama-3.1-8B-Instruct", "object": "model"},
        {"object": "model"}, {"id": ""}, "junk", {"id": "Qwen/Qwen2.5-7B"},
    ]}
    endpoints = parse_models(BASE, data)
    assert [e.model for e in endpoints] == ["Qwen/Qwen2.5-7B", "meta-llama/Llama-3.1-8B-Instruct"]
    assert endpoints[0] == Endpoint(
        id=f"openai:{BASE}#Qwen/Qwen2.5-7B", chat_url=f"{BASE}/v1/chat/completions",
        model="Qwen/Qwen2.5-7B", model_name="Qwen/Qwen2.5-7B", source="openai", flavor="openai",
        auth="container", health_url=None, kind="vllm",
    )
    assert parse_models(BASE, {"data": []}) == []


@pytest.mark.parametrize("data", [[], {}, {"data": "x"}, {"models": []}, "x", None])
def test_openai_models_malformed(data: Any) -> None:
    with pytest.raises(SourceFailed, match="expected"):
        parse_models(BASE, data)


# -- Ollama /api/tags ---------------------------------------------------------------------------

OLLAMA = "http://ollama:11434"


def test_ollama_tags() -> None:
    data = {"models": [
        {"name": "llama3.2:3b", "model": "llama3.2:3b", "details": {"family": "llama"}},
        {"name": "nomic-embed-text:latest", "model": "nomic-embed-text:latest"},
        {"name": "mxbai-EMBED-large:335m"},
        {"model": "no-name"}, {"name": None}, 3,
        {"name": "qwen2.5:7b"}, {"name": "llama3.2:3b"},
    ]}
    endpoints = parse_tags(OLLAMA, data)
    assert [e.model for e in endpoints] == ["llama3.2:3b", "qwen2.5:7b"]
    assert endpoints[0] == Endpoint(
        id=f"ollama:{OLLAMA}#llama3.2:3b", chat_url=f"{OLLAMA}/v1/chat/completions",
        model="llama3.2:3b", model_name="llama3.2:3b", source="ollama", flavor="openai",
        auth="none", health_url=f"{OLLAMA}/api/version", kind="ollama",
    )
    assert endpoints[0].base_url == OLLAMA


@pytest.mark.parametrize("data", [[], {}, {"models": None}, {"data": []}, "x"])
def test_ollama_tags_malformed(data: Any) -> None:
    with pytest.raises(SourceFailed, match="expected"):
        parse_tags(OLLAMA, data)


# -- the server lists in settings ---------------------------------------------------------------

def test_server_lists_are_comma_separated_http_urls() -> None:
    s = settings(agent_openai_servers=" http://a:8000/ , https://b/v1/,,",
                 agent_ollama_servers="http://o:11434")
    assert s.agent_openai_servers == ["http://a:8000", "https://b"]
    assert s.agent_ollama_servers == ["http://o:11434"]
    assert settings().agent_openai_servers == settings().agent_ollama_servers == []
    with pytest.raises(ConfigError, match="AGENT_OPENAI_SERVERS"):
        load_settings(_env_file=None, agent_openai_servers="gpu-box:8000")


# -- static ------------------------------------------------------------------------------------

CLOUD = "https://cloud.example/v1/chat/completions"


@pytest.mark.parametrize(("values", "ids"), [
    ({}, ["local"]),
    ({"agent_fallback_to_local": False}, []),
    ({"llm_container_name": "llm-a"}, ["container:llm-a", "local"]),
    ({"cloud_chat_ui_url": CLOUD}, ["local"]),  # a URL alone enables nothing
    ({"cloud_chat_ui_url": CLOUD, "use_cloud_llm": True}, ["cloud", "local"]),
    ({"cloud_chat_ui_url": CLOUD, "agent_fallback_to_cloud": True}, ["cloud", "local"]),
    ({"use_cloud_llm": True, "agent_fallback_to_cloud": True}, ["local"]),  # no URL, no cloud
    ({"cloud_chat_ui_url": CLOUD, "use_cloud_llm": True, "llm_container_name": "c",
      "agent_fallback_to_local": False}, ["cloud", "container:c"]),
])
def test_static_source(values: dict[str, Any], ids: list[str]) -> None:
    defaults = {"use_cloud_llm": False, "agent_fallback_to_cloud": False, "cloud_chat_ui_url": None,
                "llm_container_name": None, "agent_fallback_to_local": True}
    result = discover_static(settings(**(defaults | values)))
    assert (result.source, result.ok, result.error) == ("static", True, None)
    assert [e.id for e in result.endpoints] == ids


def test_static_endpoints_are_the_settings_builders() -> None:
    s = settings(cloud_chat_ui_url=CLOUD, use_cloud_llm=True, cloud_model_name="gpt-x",
                 llm_container_name="llm-a", local_llm_host="10.0.0.2", local_llm_port=7100,
                 local_model_name="llama-3.1-8b")
    cloud, container, local = discover_static(s).endpoints
    assert (cloud.chat_url, cloud.model, cloud.source, cloud.auth) == (CLOUD, "gpt-x", "cloud", "cloud")
    assert container.chat_url == "http://llm-a:7000/v1/chat/completions"
    assert (local.chat_url, local.health_url) == ("http://10.0.0.2:7100/v1/chat/completions",
                                                   "http://10.0.0.2:7100/health")
