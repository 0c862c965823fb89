"""OpenAI-compatible servers named in AGENT_OPENAI_SERVERS: one endpoint per model of /v1/models."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from llmpool.discovery.source import SourceFailed, SourceResult, get_json, read_server
from llmpool.endpoints import CHAT_PATH, Endpoint
from llmpool.server_kinds import Kind, is_tgi_info, kind_from_models, quantization_in
from llmpool.settings import Settings

__all__ = ["MODELS_PATH", "PROPS_PATH", "INFO_PATH", "LMSTUDIO_MODELS_PATH", "learn_kind", "lmstudio_model_url",
           "parse_models", "parse_props", "read_openai_server", "server_extras", "server_timeout"]

log = logging.getLogger("llmpool.discovery")

MODELS_PATH = "/v1/models"
PROPS_PATH = "/props"  # llama.cpp's server: total_slots, the requests it runs at once
INFO_PATH = "/info"  # TGI: model_id, router
LMSTUDIO_MODELS_PATH = "/api/v0/models"
MAX_SLOTS = 4096  # more parallel slots than any server runs: a bad answer, ignored
# llama-cpp-python's server runs one request at a time (one lock around its model, server-wide),
# and by default a second request interrupts the running stream (`interrupt_requests`): a cap of
# one keeps our own calls from cutting each other's answers.
LLAMA_CPP_PYTHON_SLOTS = 1
T = TypeVar("T")


def server_timeout(settings: Settings) -> float:
    """The health-check timeout: listing models is as cheap for a server as its health check."""
    return settings.agent_health_check_timeout


def read_openai_server(base: str, *, http: httpx.Client, timeout: float) -> SourceResult:
    """The models of the server at `base` (scheme://host:port, no /v1), as one source.

    The listing says the server's kind (llmpool.server_kinds); a llama.cpp server is also asked
    its slots (/props), and one the listing leaves unknown whether it is TGI (/info). Those two
    reads are best effort: without them the endpoints are kept, their slots or kind unknown.
    llama-cpp-python has one slot (LLAMA_CPP_PYTHON_SLOTS).
    """
    result = read_server(f"openai:{base}", base + MODELS_PATH, lambda data: parse_models(base, data),
                         http=http, timeout=timeout)
    if not result.ok or not result.endpoints:
        return result
    extra = server_extras(base, result.endpoints[0].kind, http=http, timeout=timeout)
    if not extra:
        return result
    return replace(result, endpoints=[replace(e, **extra) for e in result.endpoints])


def server_extras(base: str, kind: str, *, http: httpx.Client, timeout: float) -> dict[str, Any]:
    """What a server of `kind` tells beyond its listing, as Endpoint fields: llama.cpp's slots
    (/props), llama-cpp-python's one slot, TGI known by /info. Best effort: {} when unread."""
    extra: dict[str, Any] = {}
    if kind == "llamacpp":
        extra["slots"] = _optional(lambda: parse_props(get_json(http, base + PROPS_PATH, timeout=timeout)[0]))
    elif kind == "llama-cpp-python":
        extra["slots"] = LLAMA_CPP_PYTHON_SLOTS
    elif kind == "unknown" and _optional(lambda: is_tgi_info(get_json(http, base + INFO_PATH, timeout=timeout)[0])):
        extra["kind"] = "tgi"
    return {k: v for k, v in extra.items() if v is not None}


def learn_kind(endpoint: Endpoint, *, http: httpx.Client, timeout: float) -> Endpoint:
    """An endpoint the settings name (the container, the local host LLM) with what its server
    tells: its kind from /v1/models, then `server_extras`. Unchanged when it cannot be read."""
    if endpoint.is_cloud or endpoint.kind != "unknown":
        return endpoint
    base = endpoint.base_url
    data = _optional(lambda: get_json(http, base + MODELS_PATH, timeout=timeout)[0])
    if data is None:
        return endpoint  # down or guarded: nothing to learn now
    kind = kind_from_models(data)
    learned = replace(endpoint, kind=kind, quantization=endpoint.quantization or quantization_in(endpoint.model))
    return replace(learned, **server_extras(base, kind, http=http, timeout=timeout))


def parse_props(data: Any) -> int | None:
    """llama.cpp's parallel slots from its /props answer (`total_slots`), or None if absent or bad."""
    slots = data.get("total_slots") if isinstance(data, dict) else None
    if isinstance(slots, bool) or not isinstance(slots, int) or not 0 < slots <= MAX_SLOTS:
        return None
    return slots


def _optional(read: Callable[[], T]) -> T | None:
    """`read()`, or None when the server could not answer it (logged at DEBUG: it is optional)."""
    try:
        return read()
    except SourceFailed as exc:
        log.debug("discovery: optional read failed: %s", exc.message)
        return None


def parse_models(base: str, data: Any) -> list[Endpoint]:
    """One endpoint per model id of a /v1/models answer; SourceFailed unless it has a data list."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SourceFailed('expected {"data": [...]} from /v1/models')
    ids = []
    for model in data["data"]:
        model_id = model.get("id") if isinstance(model, dict) else None
        if isinstance(model_id, str) and model_id:
            ids.append(model_id)
        else:
            log.debug("discovery: openai:%s lists a model without an id: %r", base, model)
    kind = kind_from_models(data)
    return [_endpoint(base, model_id, kind) for model_id in dict.fromkeys(ids)]


def _endpoint(base: str, model: str, kind: Kind) -> Endpoint:
    return Endpoint(
        id=f"openai:{base}#{model}", chat_url=base + CHAT_PATH, model=model, model_name=model,
        source="openai", flavor="openai", auth="container", kind=kind,
        health_url=lmstudio_model_url(base, model) if kind == "lmstudio" else None,
        quantization=quantization_in(model),
    )


def lmstudio_model_url(base: str, model: str) -> str:
    """LM Studio's own record of one model (its `state`: loaded or not-loaded), the health URL of
    its endpoints: a model not loaded is starting, not down (llmpool.prober)."""
    return f"{base}{LMSTUDIO_MODELS_PATH}/{quote(model, safe='')}"
