"""A job's `model` picks the endpoints serving it: name or hf_model_id, any case, or an alias."""

from __future__ import annotations

import pytest

from llmpool.endpoints import Endpoint
from llmpool.errors import ConfigError
from llmpool.llm_request import build_request
from llmpool.model_choice import candidates_for, model_ids, serving, wanted_model
from llmpool.schemas import ChatJob
from llmpool.settings import load_settings


def _endpoint(eid: str, model: str, name: str) -> Endpoint:
    return Endpoint(id=eid, chat_url=f"http://{eid}:7000/v1/chat/completions", model=model,
                    model_name=name, source="discovered")


BIG = _endpoint("big", "meta-llama/Llama-3.1-70B-Instruct", "Llama-3.1-70B-Instruct")
SMALL = _endpoint("small", "meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct")
SMALL2 = _endpoint("small2", "meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct")
FLEET = [BIG, SMALL, SMALL2]
ALIASES = {"gpt-4o": "Llama-3.1-70B-Instruct", "llama-3.1-8b-instruct": "Llama-3.1-70B-Instruct"}


@pytest.mark.parametrize(("requested", "expected"), [
    (None, ["big", "small", "small2"]),
    ("auto", ["big", "small", "small2"]),
    ("AUTO", ["big", "small", "small2"]),
    ("llama-3.1-8b-instruct", ["small", "small2"]),  # a served name wins over an alias of the same name
    ("META-LLAMA/llama-3.1-70b-instruct", ["big"]),
    ("GPT-4o", ["big"]),
    ("llama-3.1-8b", []),  # no substring match: exact names only
    ("unknown", []),
])
def test_a_model_picks_the_endpoints_serving_it(requested: str | None, expected: list[str]) -> None:
    model = wanted_model(requested, FLEET, ALIASES)
    assert [e.id for e in serving(FLEET, model)] == expected


def test_model_ids_are_one_per_model_in_order() -> None:
    assert model_ids(FLEET) == ["meta-llama/Llama-3.1-70B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"]


def test_aliases_setting_reads_json_and_lowers_keys() -> None:
    settings = load_settings(agent_model_aliases='{"GPT-4o": "llama-3.1-70b"}')
    assert settings.agent_model_aliases == {"gpt-4o": "llama-3.1-70b"}


def test_openai_fields_reach_the_request_body() -> None:
    job = ChatJob(messages=[{"role": "user", "content": "hi"}], top_p=0.5, stop="END", seed=7,  # type: ignore[list-item]
                  response_format={"type": "json_object"}, user="u1",
                  tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="required")
    body = build_request(SMALL, job, load_settings()).body
    assert body["top_p"] == 0.5 and body["seed"] == 7 and body["user"] == "u1"
    assert body["stop"] == ["<|eot_id|>", "END"]
    assert body["response_format"] == {"type": "json_object"} and body["tool_choice"] == "required"


@pytest.mark.parametrize(("requested", "fallbacks", "expected"), [
    (None, {}, ["big", "small", "small2"]),
    ("meta-llama/llama-3.1-70b-instruct", {}, ["big"]),  # no fallback configured: only its own
    ("meta-llama/llama-3.1-70b-instruct", {"meta-llama/llama-3.1-70b-instruct": ["Llama-3.1-8B-Instruct"]},
     ["big", "small", "small2"]),
    ("gpt-4o", {"llama-3.1-70b-instruct": ["llama-3.1-8b-instruct"]}, ["big", "small", "small2"]),  # via its alias
    ("Llama-3.1-8B-Instruct", {"llama-3.1-8b-instruct": ["gone", "Llama-3.1-8B-Instruct"]}, ["small", "small2"]),
])
def test_failover_stays_within_the_model_and_its_configured_fallbacks(
        requested: str | None, fallbacks: dict[str, list[str]], expected: list[str]) -> None:
    chosen = candidates_for(FLEET, requested, aliases={"gpt-4o": "Llama-3.1-70B-Instruct"}, fallbacks=fallbacks)
    assert [e.id for e in chosen] == expected


def test_fallbacks_setting_reads_json_and_refuses_a_non_list() -> None:
    settings = load_settings(agent_model_fallbacks='{"Llama-3.1-70B": ["llama-3.1-8b"]}')
    assert settings.agent_model_fallbacks == {"llama-3.1-70b": ["llama-3.1-8b"]}
    with pytest.raises(ConfigError, match="AGENT_MODEL_FALLBACKS"):
        load_settings(agent_model_fallbacks='{"a": "b"}')
