"""Ollama servers named in AGENT_OLLAMA_SERVERS: their chat models, called via Ollama's /v1 API."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from llmpool.discovery.source import SourceFailed, SourceResult, read_server
from llmpool.endpoints import CHAT_PATH, Endpoint
from llmpool.server_kinds import normal_quantization, quantization_in

__all__ = ["TAGS_PATH", "VERSION_PATH", "parse_tags", "read_ollama_server"]

log = logging.getLogger("llmpool.discovery")

TAGS_PATH = "/api/tags"
VERSION_PATH = "/api/version"  # Ollama has no /health; this answers 200 whenever it is up


def read_ollama_server(base: str, *, http: httpx.Client, timeout: float) -> SourceResult:
    """The chat models of the Ollama server at `base` (scheme://host:port), as one source."""
    return read_server(f"ollama:{base}", base + TAGS_PATH, lambda data: parse_tags(base, data),
                       http=http, timeout=timeout)


def parse_tags(base: str, data: Any) -> list[Endpoint]:
    """One endpoint per non-embedding model of an /api/tags answer; SourceFailed if malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise SourceFailed('expected {"models": [...]} from /api/tags')
    names: dict[str, str | None] = {}  # name -> quantization, in listed order
    for model in data["models"]:
        name = model.get("name") if isinstance(model, dict) else None
        if not isinstance(name, str) or not name:
            log.debug("discovery: ollama:%s lists a model without a name: %r", base, model)
        elif "embed" in name.lower():
            log.debug("discovery: ollama:%s model %s skipped: an embedding model", base, name)
        elif name not in names:
            names[name] = _quantization(model) or quantization_in(name)
    return [_endpoint(base, name, quantization) for name, quantization in names.items()]


def _quantization(model: dict[str, Any]) -> str | None:
    """Ollama's own word on the tag's quantization (`details.quantization_level`), if it is one."""
    details = model.get("details")
    return normal_quantization(details.get("quantization_level")) if isinstance(details, dict) else None


def _endpoint(base: str, name: str, quantization: str | None) -> Endpoint:
    return Endpoint(
        id=f"ollama:{base}#{name}", chat_url=base + CHAT_PATH, model=name, model_name=name,
        source="ollama", flavor="openai", auth="none", health_url=base + VERSION_PATH,
        kind="ollama", quantization=quantization,
    )
