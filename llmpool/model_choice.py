"""Which endpoints serve a job's `model`: exact name or hf_model_id (case-insensitive), or an alias. Pure.

`auto` or no model means the selection as it is. Aliases (AGENT_MODEL_ALIASES) map a name clients
know (e.g. `gpt-4o`) to a model the fleet serves; an alias never hides a model of the same name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llmpool.endpoints import Endpoint
from llmpool.errors import ModelNotFound

__all__ = ["AUTO", "wanted_model", "serves", "serving", "model_ids", "require_model", "candidates_for"]

AUTO = "auto"


def wanted_model(requested: str | None, endpoints: Iterable[Endpoint],
                 aliases: Mapping[str, str]) -> str | None:
    """The model a job asks for, aliases resolved; None for `auto` or no model."""
    if requested is None or not requested.strip() or requested.strip().lower() == AUTO:
        return None
    name = requested.strip()
    if any(serves(e, name) for e in endpoints):
        return name
    return aliases.get(name.lower(), name)


def serves(endpoint: Endpoint, model: str) -> bool:
    """True when the endpoint's model name or hf_model_id is `model`, ignoring case."""
    wanted = model.lower()
    return wanted in (endpoint.model.lower(), endpoint.model_name.lower())


def serving(endpoints: Iterable[Endpoint], model: str | None) -> list[Endpoint]:
    """The endpoints serving `model`, in their order; all of them when `model` is None."""
    return [e for e in endpoints if model is None or serves(e, model)]


def model_ids(endpoints: Iterable[Endpoint]) -> list[str]:
    """One id per distinct model (what requests send: hf_model_id, else the name), in order."""
    seen: dict[str, str] = {}
    for endpoint in endpoints:
        model_id = endpoint.model or endpoint.model_name
        seen.setdefault(model_id.lower(), model_id)
    return list(seen.values())


def require_model(requested: str | None, endpoints: list[Endpoint], aliases: Mapping[str, str]) -> None:
    """ModelNotFound (404) when the job names a model no known chat endpoint serves, healthy or not."""
    chat = [e for e in endpoints if e.model_type == "chat"]
    model = wanted_model(requested, chat, aliases)
    if model is not None and not serving(chat, model):
        raise ModelNotFound(f"The model '{requested}' does not exist: no endpoint serves it "
                            "(GET /v1/models lists the models served now)", param="model")


def candidates_for(order: list[Endpoint], requested: str | None, *, aliases: Mapping[str, str],
                   fallbacks: Mapping[str, list[str]]) -> list[Endpoint]:
    """The endpoints a job may try, in order: its model's, then each configured fallback model's.

    Failover never leaves these: a job that names a model is not answered by another one unless
    AGENT_MODEL_FALLBACKS says so. No model: the whole order.
    """
    model = wanted_model(requested, order, aliases)
    if model is None:
        return list(order)
    chosen = serving(order, model)
    for fallback in fallbacks.get(model.lower(), fallbacks.get((requested or "").strip().lower(), [])):
        chosen += [e for e in serving(order, wanted_model(fallback, order, aliases)) if e not in chosen]
    return chosen
