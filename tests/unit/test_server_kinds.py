"""Server kinds: what discovery learns from each server's answers, their health semantics
(loading = starting), their slots as a concurrency cap, and quantization-aware ranking."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from llmpool.admission import limits_for
from llmpool.discovery import SourceResult, parse_deployed, parse_models, parse_tags
from llmpool.discovery.openai_servers import parse_props
from llmpool.endpoints import Endpoint
from llmpool.health import Health, ProbeResult, next_health
from llmpool.prober import starting_reason
from llmpool.registry import merge_discovery
from llmpool.selection import rank
from llmpool.server_kinds import base_model, is_tgi_info, kind_from_models, quantization_in, quantization_rank
from llmpool.settings import EndpointLimits, Settings
from tests.unit.test_discovery_parse import DEPLOY_ID, entry

BASE = "http://box:8080"


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def models(owned_by: str | None, model_id: str = "m") -> dict[str, Any]:
    entry: dict[str, Any] = {"id": model_id, "object": "model"}
    if owned_by is not None:
        entry["owned_by"] = owned_by
    return {"object": "list", "data": [entry]}


# -- kinds -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("owned_by", "kind"), [
    ("vllm", "vllm"), ("llamacpp", "llamacpp"), ("me", "llama-cpp-python"),
    ("organization_owner", "lmstudio"), ("library", "ollama"), ("openai", "unknown"), (None, "unknown"),
])
def test_kind_from_owned_by(owned_by: str | None, kind: str) -> None:
    assert kind_from_models(models(owned_by)) == kind
    assert parse_models(BASE, models(owned_by))[0].kind == kind


@pytest.mark.parametrize("data", [None, [], {"data": "x"}, {"data": [3, None, {"owned_by": 5}]}])
def test_kind_of_a_malformed_listing_is_unknown(data: Any) -> None:
    assert kind_from_models(data) == "unknown"


def test_tgi_is_known_by_its_info() -> None:
    assert is_tgi_info({"model_id": "m", "router": "text-generation-router"})
    assert not is_tgi_info({"router": 3}) and not is_tgi_info([]) and not is_tgi_info({"model_id": "m"})


def test_lmstudio_models_are_probed_at_their_own_record() -> None:
    endpoint = parse_models(BASE, models("organization_owner", "qwen/qwen3-8b"))[0]
    assert endpoint.health_url == f"{BASE}/api/v0/models/qwen%2Fqwen3-8b"
    assert parse_models(BASE, models("vllm"))[0].health_url is None


@pytest.mark.parametrize(("data", "slots"), [
    ({"total_slots": 1}, 1), ({"total_slots": 4, "model_path": "x.gguf"}, 4), ({"total_slots": 0}, None),
    ({"total_slots": -2}, None), ({"total_slots": True}, None), ({"total_slots": "4"}, None),
    ({"total_slots": 10**9}, None), ({}, None), ([], None),
])
def test_llamacpp_props_give_its_slots(data: Any, slots: int | None) -> None:
    assert parse_props(data) == slots


# -- starting is not failing -------------------------------------------------------------------

LOADING = b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'


@pytest.mark.parametrize(("status", "body", "lmstudio", "reason"), [
    (503, LOADING, False, "loading model"),
    (503, b'{"error":"overloaded"}', False, None),
    (200, b'{"id":"m","state":"not-loaded"}', True, "model not-loaded"),
    (200, b'{"id":"m","state":"loaded"}', True, None),
    (200, b'{"id":"m","state":"not-loaded"}', False, None),  # only LM Studio's record says so
    (200, b"not json", True, None), (200, b"[1]", True, None),
])
def test_starting_reason(status: int, body: bytes, lmstudio: bool, reason: str | None) -> None:
    assert starting_reason(status, body, lmstudio=lmstudio) == reason


def _after(states: list[ProbeResult], prev: Health | None = None) -> Health:
    health = prev or Health()
    for n, probe in enumerate(states):
        health = next_health(health, probe, now=float(n), max_failures=3, recovery_successes=2)
    return health


STARTING = ProbeResult(ok=False, latency=0.01, status=503, error="loading model", starting=True)
OK = ProbeResult(ok=True, latency=0.01, status=200)
DOWN = ProbeResult(ok=False, latency=0.01, error="connect error")


def test_a_loading_server_is_starting_however_long_it_loads_then_healthy_at_once() -> None:
    health = _after([STARTING] * 10)
    assert health.state == "starting" and not health.selectable
    assert health.consecutive_failures == 0 and health.last_error == "loading model"
    assert _after([OK], health).state == "healthy"


def test_a_failing_server_that_restarts_and_loads_is_starting_not_unhealthy() -> None:
    health = _after([OK, DOWN, DOWN, DOWN])
    assert health.state == "unhealthy"
    health = _after([STARTING], health)
    assert health.state == "starting" and health.consecutive_failures == 0
    assert _after([OK], health).state == "healthy"


def test_a_starting_server_that_stops_answering_becomes_unhealthy() -> None:
    assert _after([STARTING, DOWN, DOWN]).state == "starting"
    assert _after([STARTING, DOWN, DOWN, DOWN]).state == "unhealthy"


def test_starting_endpoints_are_not_selected() -> None:
    endpoints = [Endpoint(id=i, chat_url=f"http://{i}/v1/chat/completions", model="m", model_name="m",
                          source="openai") for i in ("a", "b")]
    health = {"a": Health(state="starting"), "b": Health(state="healthy")}
    assert [e.id for e in rank(endpoints, health, settings())] == ["b"]


# -- slots as a concurrency cap ----------------------------------------------------------------

def _slotted(slots: int | None, model: str = "tiny") -> Endpoint:
    return Endpoint(id="ep", chat_url="http://x/v1/chat/completions", model=model, model_name=model,
                    source="openai", kind="llamacpp", slots=slots)


@pytest.mark.parametrize(("slots", "default", "limits", "cap"), [
    (1, 0, {}, 1),  # a one-slot server gets a cap of one
    (4, 0, {}, 4),
    (4, 2, {}, 2),  # a lower default stands
    (4, 8, {}, 4),
    (None, 0, {}, 0),  # slots unknown: unlimited as before
    (1, 0, {"ep": EndpointLimits(max_concurrency=3)}, 3),  # AGENT_ENDPOINT_LIMITS says otherwise
    (1, 0, {"tiny": EndpointLimits(max_concurrency=0)}, 0),
    (1, 0, {"ep": EndpointLimits(rpm=5)}, 1),  # an override without max_concurrency keeps the cap
])
def test_slots_cap_concurrency_unless_the_limits_say_otherwise(
        slots: int | None, default: int, limits: dict[str, EndpointLimits], cap: int) -> None:
    chosen = settings(agent_endpoint_max_concurrency=default, agent_endpoint_limits=limits)
    assert limits_for(_slotted(slots), chosen).max_concurrency == cap


# -- quantization ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "quant"), [
    ("/models/llama-3-8b.Q4_K_M.gguf", "Q4_K_M"), ("llama3.1:8b-instruct-q8_0", "Q8_0"),
    ("Meta-Llama-3.1-8B-Instruct-Q5_K_S.gguf", "Q5_K_S"), ("qwen2.5-7b-instruct-fp16", None),
    ("model-f16.gguf", "F16"), ("llama-3.1-8b", None), ("Q4_K_Mx", None), ("/q8_0/model.gguf", None),
])
def test_quantization_in_names(name: str, quant: str | None) -> None:
    assert quantization_in(name) == quant


@pytest.mark.parametrize(("name", "base"), [
    ("llama3.1:8b-instruct-q8_0", "llama3.1:8b-instruct"), ("llama3.1:8b-instruct-q4_K_M", "llama3.1:8b-instruct"),
    ("/models/llama-3-8b.Q4_K_M.gguf", "llama-3-8b"), ("Llama-3.1-8B", "llama-3.1-8b"),
])
def test_base_model_drops_the_quantization(name: str, base: str) -> None:
    assert base_model(name) == base


def test_quantization_rank_orders_by_precision_or_speed() -> None:
    names = ["Q4_K_M", "F16", "Q2_K", "Q8_0", "Q6_K", "Q5_K_M", "Q4_0", None]
    assert sorted(names, key=lambda q: quantization_rank(q, "quality")) == [
        "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q2_K", None]
    assert sorted(names, key=lambda q: quantization_rank(q, "speed")) == [
        "Q2_K", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16", None]


def _tag(name: str, level: str | None) -> dict[str, Any]:
    details = {"family": "llama", "parameter_size": "8.0B"} | ({"quantization_level": level} if level else {})
    return {"name": name, "model": name, "details": details}


def test_ollama_tags_give_the_quantization() -> None:
    tags = {"models": [_tag("llama3.1:8b", "Q4_K_M"), _tag("llama3.1:8b-instruct-q8_0", None),
                       _tag("qwen:7b", "weird"), {"name": "x:1", "details": "junk"}]}
    assert [(e.model, e.quantization) for e in parse_tags("http://o:11434", tags)] == [
        ("llama3.1:8b", "Q4_K_M"), ("llama3.1:8b-instruct-q8_0", "Q8_0"), ("qwen:7b", None), ("x:1", None)]


@pytest.mark.parametrize(("prefer", "first"), [("quality", "Q8_0"), ("speed", "Q4_K_M")])
def test_ollama_q8_and_q4_tags_of_one_model_are_ranked_as_agent_prefer_says(prefer: str, first: str) -> None:
    tags = {"models": [_tag("llama3.1:8b-instruct-q4_K_M", "Q4_K_M"), _tag("llama3.1:8b-instruct-q8_0", "Q8_0"),
                       _tag("llama3.1:8b-instruct-zz", None)]}
    endpoints = parse_tags("http://o:11434", tags)
    health = {e.id: Health(state="healthy") for e in endpoints}
    ranked = rank(endpoints, health, settings(agent_prefer=prefer))
    assert [e.quantization for e in ranked] == [first, "Q4_K_M" if first == "Q8_0" else "Q8_0", None]


def test_agent_prefer_is_validated() -> None:
    with pytest.raises(ValidationError, match="agent_prefer"):
        settings(agent_prefer="fast")


# -- what is learned once and kept -------------------------------------------------------------

def test_a_failed_props_read_keeps_the_slots_learned_before() -> None:
    learned = _slotted(2)
    first = merge_discovery({}, [SourceResult("openai:x", True, [learned])], now=0.0, grace=60)
    unread = merge_discovery(first, [SourceResult("openai:x", True, [_slotted(None)])], now=1.0, grace=60)
    assert unread["ep"].endpoint.slots == 2
    told = merge_discovery(unread, [SourceResult("openai:x", True, [_slotted(4)])], now=2.0, grace=60)
    assert told["ep"].endpoint.slots == 4


def test_a_tt_studio_container_docker_lists_as_starting() -> None:
    [starting] = parse_deployed({DEPLOY_ID: entry(health="starting")})
    [healthy] = parse_deployed({DEPLOY_ID: entry()})
    assert starting.container_starting and not healthy.container_starting
    assert starting.kind == healthy.kind == "tt-studio"


def test_a_failed_read_keeps_the_kind_learned_before() -> None:
    known = merge_discovery({}, [SourceResult("static", True, [_slotted(1)])], now=0.0, grace=60)
    unread = replace(_slotted(None), kind="unknown")
    kept = merge_discovery(known, [SourceResult("static", True, [unread])], now=1.0, grace=60)["ep"].endpoint
    assert (kept.kind, kept.slots) == ("llamacpp", 1)
