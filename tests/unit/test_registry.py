"""The registry's Redis side, on fakeredis; tests/integration/real_redis/test_registry.py runs these on a real Redis."""

from __future__ import annotations

import pytest
import redis

from llmpool.endpoints import Endpoint
from llmpool.health import Health
from llmpool.keys import Keys
from llmpool.registry import EndpointRecord, Registry
from llmpool.settings import Settings

KEYS = Keys("t")


@pytest.fixture
def registry(any_redis: redis.Redis) -> Registry:
    return Registry(any_redis, KEYS)


def ep(endpoint_id: str, name: str) -> Endpoint:
    return Endpoint(id=endpoint_id, chat_url=f"http://{endpoint_id}/v1/chat/completions", model=name,
                    model_name=name, source="discovered")


def fill(registry: Registry, states: dict[str, str]) -> None:
    names = {"a": "Llama-3.1-70B", "b": "Llama-3.1-8B"}
    registry.write_records({i: EndpointRecord(ep(i, names[i]), "backend", 1.0, 1.0) for i in states})
    registry.write_health({i: Health(state=s) for i, s in states.items()})  # type: ignore[arg-type]


def test_recompute_stores_the_selection_every_worker_reads(registry: Registry) -> None:
    fill(registry, {"a": "healthy", "b": "healthy"})
    chosen = registry.recompute(Settings(), now=10.0)
    assert [e.id for e in chosen.order] == ["a", "b"]
    stored = registry.selection()
    assert stored is not None and stored.current is not None and stored.current.id == "a"
    assert stored.current == chosen.current  # the whole endpoint travels, not only its id


def test_pin_holds_until_its_endpoint_turns_unhealthy(registry: Registry) -> None:
    fill(registry, {"a": "healthy", "b": "healthy"})
    registry.set_pin("b")
    assert registry.recompute(Settings(), now=1.0).current.id == "b"  # type: ignore[union-attr]
    registry.write_health({"b": Health(state="unhealthy")})
    chosen = registry.recompute(Settings(), now=2.0)
    assert chosen.current.id == "a" and chosen.pinned is None  # type: ignore[union-attr]
    assert registry.snapshot().pin is None  # cleared, not just ignored


def test_records_replaced_and_health_of_departed_endpoints_dropped(registry: Registry) -> None:
    fill(registry, {"a": "healthy", "b": "healthy"})
    registry.write_records({"a": EndpointRecord(ep("a", "Llama-3.1-70B"), "backend", 1.0, 2.0)})
    snap = registry.snapshot()
    assert set(snap.records) == {"a"} and set(snap.health) == {"a"}
    assert snap.records["a"].last_seen == 2.0


def test_keys_are_all_under_the_prefix(registry: Registry) -> None:
    fill(registry, {"a": "healthy"})
    registry.set_pin("a")
    registry.recompute(Settings(), now=1.0)
    assert sorted(k.decode() for k in registry.redis.keys("*")) == [
        "t:registry:endpoints", "t:registry:health", "t:registry:pin", "t:registry:selection"]
