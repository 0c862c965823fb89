"""Choosing the LLM: the fallback chain, ranking by AGENT_PRIORITY_MODELS, and the pin. Pure.

Chain (DESIGN.md): cloud first (USE_CLOUD_LLM with a token), the named container, discovered
endpoints (TT-Studio containers, configured OpenAI-compatible and Ollama servers) ranked by
priority model, the local host LLM, and cloud as the last resort. Only selectable endpoints
(healthy or degraded; every endpoint when health checks are off) take part.

Within one chain step and priority, endpoints of one model (its name without the quantization:
llmpool.server_kinds.base_model) and one health sit together, ordered by quantization as
AGENT_PREFER says: higher precision first for "quality", lower for "speed".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmpool.endpoints import Endpoint
from llmpool.health import Health
from llmpool.server_kinds import base_model, quantization_rank
from llmpool.settings import Settings

__all__ = ["Selection", "chain_position", "priority_index", "rank", "select"]

HEALTH_RANK = {"healthy": 0, "degraded": 1}
DISCOVERED = ("discovered", "openai", "ollama")


@dataclass(frozen=True)
class Selection:
    """The ordered candidates every worker uses; `current` is the first of them."""

    order: list[Endpoint] = field(default_factory=list)
    pinned: str | None = None
    computed_at: float = 0.0

    @property
    def current(self) -> Endpoint | None:
        return self.order[0] if self.order else None

    def to_dict(self) -> dict[str, Any]:
        return {"order": [e.to_dict() for e in self.order], "pinned": self.pinned,
                "computed_at": self.computed_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selection:
        return cls(order=[Endpoint.from_dict(e) for e in data.get("order", [])],
                   pinned=data.get("pinned"), computed_at=float(data.get("computed_at", 0.0)))


def _cloud_first(settings: Settings) -> bool:
    return settings.use_cloud_llm and settings.cloud_chat_ui_auth_token is not None


def chain_position(endpoint: Endpoint, settings: Settings) -> int:
    """Where an endpoint's kind stands in the fallback chain (lower is tried first)."""
    if endpoint.source == "cloud":
        return 0 if _cloud_first(settings) else 4
    if endpoint.source == "container":
        return 1
    if endpoint.source in DISCOVERED:
        return 2
    return 3  # the local host LLM


def priority_index(model_name: str, priority_models: list[str]) -> int:
    """Index of the first priority model that is a case-insensitive substring of the name."""
    lowered = model_name.lower()
    for index, wanted in enumerate(priority_models):
        if wanted.lower() in lowered:
            return index
    return len(priority_models)


def _health_rank(endpoint: Endpoint, health: dict[str, Health], enabled: bool) -> int | None:
    """0 healthy, 1 degraded, None not selectable; cloud and unchecked endpoints count healthy."""
    if not enabled or endpoint.source == "cloud":
        return 0
    state = health.get(endpoint.id, Health()).state
    return HEALTH_RANK.get(state)


def rank(endpoints: list[Endpoint], health: dict[str, Health], settings: Settings) -> list[Endpoint]:
    """The selectable endpoints, best first."""
    enabled = settings.agent_health_check_enabled
    keyed = []
    for endpoint in endpoints:
        if endpoint.model_type != "chat":
            continue
        health_rank = _health_rank(endpoint, health, enabled)
        if health_rank is None:
            continue
        key = (chain_position(endpoint, settings),
               priority_index(endpoint.model_name, settings.agent_priority_models),
               health_rank, base_model(endpoint.model_name),
               quantization_rank(endpoint.quantization, settings.agent_prefer), endpoint.model_name.lower(),
               endpoint.id)
        keyed.append((key, endpoint))
    return [endpoint for _key, endpoint in sorted(keyed, key=lambda item: item[0])]


def select(
    endpoints: list[Endpoint], health: dict[str, Health], pinned: str | None, settings: Settings,
    *, now: float,
) -> Selection:
    """The selection: the ranked order, with a selectable pinned endpoint moved to the front.

    A pin on an endpoint that is gone or no longer selectable is dropped (`pinned=None`), so the
    caller clears it: a pin holds until its endpoint turns unhealthy or is unpinned.
    """
    order = rank(endpoints, health, settings)
    pinned_endpoint = next((e for e in order if e.id == pinned), None)
    if pinned_endpoint is None:
        return Selection(order=order, pinned=None, computed_at=now)
    rest = [e for e in order if e.id != pinned]
    return Selection(order=[pinned_endpoint, *rest], pinned=pinned, computed_at=now)
