"""Selection, polling and registry merging: pure rules as tables, with `now` as input."""

from __future__ import annotations

import pytest

from llmpool.discovery import SourceResult
from llmpool.endpoints import Endpoint
from llmpool.health import Health
from llmpool.polling import discovery_due, discovery_every
from llmpool.registry import EndpointRecord, merge_discovery
from llmpool.selection import priority_index, rank, select
from llmpool.settings import Settings

PRIORITY = ["llama-3.1-70b", "llama-3.1-8b", "mistral-7b"]
SETTINGS = Settings(agent_priority_models=PRIORITY)


def ep(endpoint_id: str, name: str = "", source: str = "discovered", model_type: str = "chat") -> Endpoint:
    return Endpoint(id=endpoint_id, chat_url=f"http://{endpoint_id}:7000/v1/chat/completions",
                    model=name or endpoint_id, model_name=name or endpoint_id, source=source,  # type: ignore[arg-type]
                    model_type=model_type)


def h(state: str) -> Health:
    return Health(state=state)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "index"),
    [("Llama-3.1-70B-Instruct", 0), ("meta-llama/LLAMA-3.1-8B", 1), ("Mistral-7B-v0.3", 2),
     ("falcon-7b", 3), ("", 3)],
)
def test_priority_index_is_case_insensitive_substring(name: str, index: int) -> None:
    assert priority_index(name, PRIORITY) == index


RANK_CASES = [
    # endpoints (id, model name, health), expected order
    ([("a", "Mistral-7B", "healthy"), ("b", "Llama-3.1-70B", "healthy"), ("c", "Llama-3.1-8B", "healthy")],
     ["b", "c", "a"]),
    # healthy before degraded within one priority model, but a degraded 70b beats a healthy 8b
    ([("a", "Llama-3.1-70B", "degraded"), ("b", "Llama-3.1-70B", "healthy"), ("c", "Llama-3.1-8B", "healthy")],
     ["b", "a", "c"]),
    # unhealthy and unknown are never selected; unmatched names come after every priority model
    ([("a", "Llama-3.1-70B", "unhealthy"), ("b", "qwen", "healthy"), ("c", "Llama-3.1-8B", "unknown"),
      ("d", "Mistral-7B", "degraded")], ["d", "b"]),
    ([], []),
]


@pytest.mark.parametrize(("rows", "expected"), RANK_CASES)
def test_rank(rows: list[tuple[str, str, str]], expected: list[str]) -> None:
    endpoints = [ep(i, n) for i, n, _ in rows]
    health = {i: h(s) for i, _, s in rows}
    assert [e.id for e in rank(endpoints, health, SETTINGS)] == expected


def _chain_endpoints() -> list[Endpoint]:
    return [ep("local", "x", "local"), ep("d1", "Llama-3.1-70B"), ep("cloud", "gpt", "cloud"),
            ep("container:n", "y", "container"), ep("openai:s#m", "Llama-3.1-8B", "openai")]


CHAIN_CASES = [
    ({}, ["container:n", "d1", "openai:s#m", "local", "cloud"]),
    ({"use_cloud_llm": True, "cloud_chat_ui_auth_token": "t"},
     ["cloud", "container:n", "d1", "openai:s#m", "local"]),
    ({"use_cloud_llm": True}, ["container:n", "d1", "openai:s#m", "local", "cloud"]),  # no token
]


@pytest.mark.parametrize(("values", "expected"), CHAIN_CASES)
def test_chain_order(values: dict, expected: list[str]) -> None:
    settings = Settings(agent_priority_models=PRIORITY, **values)
    endpoints = _chain_endpoints()
    health = {e.id: h("healthy") for e in endpoints if e.source != "cloud"}  # cloud is never probed
    assert [e.id for e in rank(endpoints, health, settings)] == expected


def test_health_checks_off_makes_everything_selectable_and_non_chat_never() -> None:
    settings = Settings(agent_health_check_enabled=False, agent_priority_models=PRIORITY)
    endpoints = [ep("a", "Llama-3.1-8B"), ep("b", "Llama-3.1-70B"), ep("e", "embed", model_type="embedding")]
    assert [e.id for e in rank(endpoints, {"a": h("unhealthy")}, settings)] == ["b", "a"]


PIN_CASES = [
    ("c", "healthy", ["c", "b", "a"], "c"),   # a selectable pin goes first
    ("c", "degraded", ["c", "b", "a"], "c"),
    ("c", "unhealthy", ["b", "a"], None),     # an unhealthy pin is dropped
    ("gone", "healthy", ["b", "c", "a"], None),
    (None, "healthy", ["b", "c", "a"], None),
]


@pytest.mark.parametrize(("pin", "pin_state", "order", "pinned"), PIN_CASES)
def test_pin(pin: str | None, pin_state: str, order: list[str], pinned: str | None) -> None:
    endpoints = [ep("a", "Mistral-7B"), ep("b", "Llama-3.1-70B"), ep("c", "Llama-3.1-8B")]
    health = {"a": h("healthy"), "b": h("healthy"), "c": h(pin_state)}
    chosen = select(endpoints, health, pin, SETTINGS, now=5.0)
    assert [e.id for e in chosen.order] == order
    assert chosen.pinned == pinned and chosen.computed_at == 5.0
    assert chosen.current is not None and chosen.current.id == order[0]


POLL = Settings(agent_discovery_interval=60, agent_llm_polling_interval=180, agent_llm_polling_max_attempts=3)
DUE_CASES = [
    # settings, last_run, has_llm, empty passes, force, due
    (POLL, None, False, 0, False, True),
    (POLL, 100.0, True, 0, False, False),       # 30 s after a pass, with an LLM
    (POLL, 60.0, True, 0, False, True),          # 70 s after
    (POLL, 60.0, False, 2, False, True),         # polling
    (POLL, 60.0, False, 3, False, False),        # gave up after 3 attempts
    (POLL, 60.0, False, 3, True, True),          # a forced refresh always runs
    (Settings(agent_discovery_interval=600, agent_llm_polling_interval=20), 105.0, False, 0, False, True),
    (Settings(agent_discovery_interval=600, agent_llm_polling_interval=20), 105.0, True, 0, False, False),
    (Settings(agent_discovery_interval=600, agent_llm_polling_interval=20, agent_llm_polling_enabled=False),
     105.0, False, 0, False, False),
]


@pytest.mark.parametrize(("settings", "last", "has_llm", "empty", "force", "due"), DUE_CASES)
def test_discovery_due(settings: Settings, last: float | None, has_llm: bool, empty: int, force: bool,
                       due: bool) -> None:
    assert discovery_due(settings, now=130.0, last_run=last, has_llm=has_llm, empty_passes=empty,
                         force=force)[0] is due


def test_discovery_fires_at_the_polling_interval_when_that_is_shorter() -> None:
    assert discovery_every(Settings(agent_discovery_interval=600, agent_llm_polling_interval=20)) == 20
    assert discovery_every(Settings()) == 60


def rec(endpoint: Endpoint, source: str, *, missing_since: float | None = None) -> EndpointRecord:
    return EndpointRecord(endpoint=endpoint, source=source, first_seen=1.0, last_seen=1.0,
                          missing_since=missing_since)


def test_merge_adds_updates_and_keeps_first_seen() -> None:
    existing = {"a": rec(ep("a"), "backend")}
    merged = merge_discovery(existing, [SourceResult("backend", True, [ep("a"), ep("b")])], now=50.0, grace=10)
    assert set(merged) == {"a", "b"}
    assert merged["a"].first_seen == 1.0 and merged["a"].last_seen == 50.0
    assert merged["b"].first_seen == 50.0


def test_a_missing_endpoint_leaves_after_the_grace_period() -> None:
    existing = {"a": rec(ep("a"), "backend")}
    empty = [SourceResult("backend", True, [])]
    first = merge_discovery(existing, empty, now=50.0, grace=10)
    assert first["a"].missing_since == 50.0
    assert "a" in merge_discovery(first, empty, now=59.0, grace=10)
    assert "a" not in merge_discovery(first, empty, now=60.0, grace=10)


def test_an_unreachable_source_keeps_its_endpoints() -> None:
    existing = {"a": rec(ep("a"), "backend"), "l": rec(ep("local", source="local"), "static")}
    results = [SourceResult("backend", False, [], "HTTP 500"), SourceResult("static", True, [])]
    merged = merge_discovery(existing, results, now=500.0, grace=10)
    assert merged["a"] == existing["a"]
    assert "l" not in merged  # a static endpoint removed from the settings goes at once


def test_a_source_no_longer_configured_ages_out() -> None:
    existing = {"o": rec(ep("o", source="openai"), "openai:http://x")}
    merged = merge_discovery(existing, [SourceResult("static", True, [])], now=100.0, grace=0)
    assert merged == {}
