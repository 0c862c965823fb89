"""The TT-Studio backend's deployed chat containers, cached in Redis for every worker to share.

`GET {AGENT_BACKEND_URL}/models/deployed/` answers a JSON object keyed by deploy id, one entry
per container (TT-Studio's docker_utils.serialize_canonical_entry_for_http). A good answer is
kept raw in Redis for AGENT_DISCOVERY_CACHE_TTL, so N workers ask the backend once per TTL, not
N times; a failed read is not cached, as in the TT-Studio agent.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis import Redis, RedisError

from llmpool.discovery.source import SourceFailed, SourceResult, get_json, with_scheme
from llmpool.endpoints import Endpoint
from llmpool.keys import Keys
from llmpool.settings import Settings

__all__ = ["BACKEND_SOURCE", "DEPLOYED_PATH", "backend_timeout", "discover_backend", "parse_deployed"]

log = logging.getLogger("llmpool.discovery")

BACKEND_SOURCE = "backend"
DEPLOYED_PATH = "/models/deployed/"  # with the slash, as the backend routes it
NonEmpty = Annotated[str, Field(min_length=1)]


class ModelImpl(BaseModel):
    """The part of `model_impl` discovery reads; every other field is allowed and ignored."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    model_name: NonEmpty
    hf_model_id: str | None = None
    model_type: str | None = None


class DeployedEntry(BaseModel):
    """One deployed container as the backend lists it (lenient: extra fields allowed)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: NonEmpty
    model_impl: ModelImpl
    internal_url: NonEmpty
    health_url: str | None = None
    status: str | None = None
    health: str | None = None  # Docker's health of the container: starting, healthy, unhealthy
    model_type: str | None = None
    tool_calling_enabled: bool | None = None


def backend_timeout(settings: Settings) -> float:
    """Twice the health-check timeout: the TT-Studio agent's 10 s at the default 5 s."""
    return settings.agent_health_check_timeout * 2


def discover_backend(settings: Settings, *, http: httpx.Client, redis: Redis, keys: Keys,
                     force: bool = False) -> SourceResult:
    """The backend's chat containers, from the shared cache within its TTL unless `force`."""
    key = keys.discovery_cache(BACKEND_SOURCE)
    if not force:
        cached = _cached_endpoints(redis, key)
        if cached is not None:
            return SourceResult(BACKEND_SOURCE, True, cached)
    url = settings.agent_backend_url + DEPLOYED_PATH
    try:
        data, raw = get_json(http, url, timeout=backend_timeout(settings))
        endpoints = parse_deployed(data)
    except SourceFailed as exc:
        log.warning("discovery: backend %s unreadable: %s", url, exc.message)
        return SourceResult(BACKEND_SOURCE, False, [], exc.message)
    _store(redis, key, raw, settings.agent_discovery_cache_ttl)
    return SourceResult(BACKEND_SOURCE, True, endpoints)


def parse_deployed(data: Any, *, quiet: bool = False) -> list[Endpoint]:
    """The chat endpoints of a deployed-models answer; SourceFailed unless it is a JSON object.

    A malformed entry is skipped with a warning (at DEBUG when `quiet`, for cached answers whose
    problems were reported when fetched); the other entries are kept.
    """
    if not isinstance(data, dict):
        raise SourceFailed(f"expected a JSON object keyed by deploy id, got {_json_kind(data)}")
    endpoints = []
    for deploy_id, raw in data.items():
        endpoint = _entry_endpoint(str(deploy_id), raw, quiet=quiet)
        if endpoint is not None:
            endpoints.append(endpoint)
    return endpoints


def _entry_endpoint(deploy_id: str, raw: Any, *, quiet: bool) -> Endpoint | None:
    """The endpoint of one entry, or None when it is invalid, not chat, or not running."""
    try:
        entry = DeployedEntry.model_validate(raw)
    except ValidationError as exc:
        level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "discovery: backend entry %s skipped: %s", deploy_id, _problem(exc))
        return None
    model_type = entry.model_type or entry.model_impl.model_type or "unknown"
    if model_type.lower() != "chat":
        log.debug("discovery: backend entry %s skipped: model_type %s", deploy_id, model_type)
        return None
    if entry.status is not None and entry.status.lower() != "running":
        log.debug("discovery: backend entry %s skipped: status %s", deploy_id, entry.status)
        return None
    return _endpoint(deploy_id, entry)


def _endpoint(deploy_id: str, entry: DeployedEntry) -> Endpoint:
    impl = entry.model_impl
    return Endpoint(
        id=deploy_id, deploy_id=deploy_id, container_name=entry.name,
        chat_url=with_scheme(entry.internal_url),
        health_url=with_scheme(entry.health_url) if entry.health_url else None,
        model=impl.hf_model_id or impl.model_name, model_name=impl.model_name,
        source="discovered", flavor="vllm", auth="container", model_type="chat",
        tool_calling=bool(entry.tool_calling_enabled), kind="tt-studio",
        container_starting=(entry.health or "").lower() == "starting",
    )


def _problem(exc: ValidationError) -> str:
    """The first few validation errors as `field.path: message`, without the input values."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in errors[:3]]
    return "; ".join(parts)


def _json_kind(data: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(data), "a number" if isinstance(data, int | float) else type(data).__name__)


def _cached_endpoints(redis: Redis, key: str) -> list[Endpoint] | None:
    """The endpoints of the cached answer, or None when there is none (or Redis fails)."""
    try:
        raw = redis.get(key)
    except RedisError as exc:
        log.warning("discovery: backend cache unreadable (%s); asking the backend", type(exc).__name__)
        return None
    if raw is None:
        return None
    try:
        return parse_deployed(json.loads(raw), quiet=True)
    except (ValueError, SourceFailed):
        return None  # only good answers are stored, so this is a foreign value: refetch


def _store(redis: Redis, key: str, raw: bytes, ttl: float) -> None:
    """Cache a good answer for `ttl` seconds (PX, so fractional TTLs work)."""
    try:
        redis.set(key, raw, px=max(1, round(ttl * 1000)))
    except RedisError as exc:
        # Discovery still works without the cache; every worker just asks the backend itself.
        log.warning("discovery: backend cache not written (%s)", type(exc).__name__)
