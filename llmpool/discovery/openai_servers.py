"""OpenAI-compatible servers named in AGENT_OPENAI_SERVERS: one endpoint per model of /v1/models."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from llmpool.discovery.source import SourceFailed, SourceResult, read_server
from llmpool.endpoints import CHAT_PATH, Endpoint
from llmpool.settings import Settings

__all__ = ["MODELS_PATH", "parse_models", "read_openai_server", "server_timeout"]

log = logging.getLogger("llmpool.discovery")

MODELS_PATH = "/v1/models"


def server_timeout(settings: Settings) -> float:
    """The health-check timeout: listing models is as cheap for a server as its health check."""
    return settings.agent_health_check_timeout


def read_openai_server(base: str, *, http: httpx.Client, timeout: float) -> SourceResult:
    """The models of the server at `base` (scheme://host:port, no /v1), as one source."""
    return read_server(f"openai:{base}", base + MODELS_PATH, lambda data: parse_models(base, data),
                       http=http, timeout=timeout)


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
    return [_endpoint(base, model_id) for model_id in dict.fromkeys(ids)]


def _endpoint(base: str, model: str) -> Endpoint:
    return Endpoint(
        id=f"openai:{base}#{model}", chat_url=base + CHAT_PATH, model=model, model_name=model,
        source="openai", flavor="openai", auth="container", health_url=None,
    )
