"""The endpoint registry in Redis: records, health, the pin and the selection every worker reads.

Discovery writes only the endpoints hash and health passes only the health hash (each under its
own lock), so neither can overwrite the other's fields. The selection is recomputed from all
three inputs inside WATCH/MULTI: a writer that read stale inputs retries instead of winning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import redis

from llmpool.codec import as_text
from llmpool.discovery import SourceResult
from llmpool.endpoints import Endpoint
from llmpool.health import Health
from llmpool.keys import Keys
from llmpool.selection import Selection, select
from llmpool.settings import Settings

__all__ = ["EndpointRecord", "Snapshot", "Registry", "merge_discovery"]

log = logging.getLogger(__name__)
STATIC_SOURCE = "static"


@dataclass(frozen=True)
class EndpointRecord:
    endpoint: Endpoint
    source: str
    first_seen: float
    last_seen: float
    missing_since: float | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "endpoint": self.endpoint.to_dict()})

    @classmethod
    def from_json(cls, raw: str | bytes) -> EndpointRecord:
        data = json.loads(raw)
        return cls(endpoint=Endpoint.from_dict(data["endpoint"]), source=data["source"],
                   first_seen=data["first_seen"], last_seen=data["last_seen"],
                   missing_since=data.get("missing_since"))


@dataclass(frozen=True)
class Snapshot:
    records: dict[str, EndpointRecord]
    health: dict[str, Health]
    pin: str | None
    selection: Selection | None

    @property
    def endpoints(self) -> list[Endpoint]:
        return [r.endpoint for r in self.records.values()]


def _seen(record: EndpointRecord | None, endpoint: Endpoint, source: str, now: float) -> EndpointRecord:
    first = record.first_seen if record else now
    return EndpointRecord(endpoint=_learned(record, endpoint), source=source, first_seen=first, last_seen=now)


def _learned(record: EndpointRecord | None, endpoint: Endpoint) -> Endpoint:
    """`endpoint` keeping what its server told before when this pass could not read it (the kind
    of an endpoint the settings name, llama.cpp's /props: read best effort): one failed read must
    not forget a kind or lift a cap."""
    before = record.endpoint if record else None
    if before is None:
        return endpoint
    if endpoint.kind == "unknown" and before.kind != "unknown":
        endpoint = replace(endpoint, kind=before.kind)
    if endpoint.slots is None and before.slots and before.kind == endpoint.kind:
        endpoint = replace(endpoint, slots=before.slots)
    return endpoint


def merge_discovery(
    existing: dict[str, EndpointRecord], results: list[SourceResult], *, now: float, grace: float,
) -> dict[str, EndpointRecord]:
    """The registry after a discovery pass.

    A source that answered replaces its endpoints; one that did not keeps them (they stay
    health-checked). An endpoint its source no longer lists stays for `grace` seconds, so one
    flaky listing does not drop a working container; static endpoints (settings) go at once.
    """
    merged: dict[str, EndpointRecord] = {}
    answered = {r.source for r in results if r.ok}
    known = {r.source for r in results}
    for result in results:
        if result.ok:
            for endpoint in result.endpoints:
                merged[endpoint.id] = _seen(existing.get(endpoint.id), endpoint, result.source, now)
    for endpoint_id, record in existing.items():
        if endpoint_id in merged:
            continue
        if record.source in known and record.source not in answered:
            merged[endpoint_id] = record  # its source is down: keep it as it was
            continue
        missing_since = record.missing_since or now
        if record.source != STATIC_SOURCE and now - missing_since < grace:
            merged[endpoint_id] = replace(record, missing_since=missing_since)
    return merged


class Registry:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def snapshot(self) -> Snapshot:
        """Everything the registry holds, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.endpoints())
        pipe.hgetall(self.keys.health())
        pipe.get(self.keys.pin())
        pipe.get(self.keys.selection())
        return self._decode(*pipe.execute())

    def _decode(self, records: dict, health: dict, pin: Any, selection: Any) -> Snapshot:
        return Snapshot(
            records={as_text(k): EndpointRecord.from_json(v) for k, v in records.items()},
            health={as_text(k): Health.from_dict(json.loads(v)) for k, v in health.items()},
            pin=as_text(pin) if pin else None,
            selection=Selection.from_dict(json.loads(selection)) if selection else None,
        )

    def selection(self) -> Selection | None:
        """The current selection alone: the one read a worker makes for its jobs."""
        raw = self.redis.get(self.keys.selection())
        return Selection.from_dict(json.loads(raw)) if raw else None

    def write_records(self, records: dict[str, EndpointRecord]) -> None:
        """Replace the endpoint records, dropping the health of endpoints that left."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.endpoints())
        if records:
            pipe.hset(self.keys.endpoints(), mapping={k: r.to_json() for k, r in records.items()})
        pipe.execute()
        stale = set(as_text(k) for k in self.redis.hkeys(self.keys.health())) - set(records)
        if stale:
            self.redis.hdel(self.keys.health(), *stale)

    def write_health(self, health: dict[str, Health]) -> None:
        if health:
            mapping = {k: json.dumps(h.to_dict()) for k, h in health.items()}
            self.redis.hset(self.keys.health(), mapping=mapping)  # type: ignore[arg-type]

    def discovery_state(self) -> dict[str, float]:
        """When discovery last ran (`last_run`) and how many passes in a row found no LLM."""
        return {as_text(k): float(v) for k, v in self.redis.hgetall(self.keys.discovery_state()).items()}

    def record_discovery_pass(self, *, started: float, empty_passes: int) -> None:
        self.redis.hset(self.keys.discovery_state(), mapping={"last_run": started, "empty_passes": empty_passes})

    def set_pin(self, endpoint_id: str | None) -> None:
        if endpoint_id is None:
            self.redis.delete(self.keys.pin())
        else:
            self.redis.set(self.keys.pin(), endpoint_id)

    def recompute(self, settings: Settings, *, now: float) -> Selection:
        """Select from the current inputs and store it; a pin that no longer holds is cleared."""
        # The selection is watched too, so of two passes that change it at once only one logs it.
        inputs = [self.keys.endpoints(), self.keys.health(), self.keys.pin(), self.keys.selection()]
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*inputs)
                    snap = self._decode(pipe.hgetall(inputs[0]), pipe.hgetall(inputs[1]),
                                        pipe.get(inputs[2]), pipe.get(inputs[3]))
                    chosen = select(snap.endpoints, snap.health, snap.pin, settings, now=now)
                    pipe.multi()
                    pipe.set(self.keys.selection(), json.dumps(chosen.to_dict()))
                    if snap.pin and chosen.pinned is None:
                        pipe.delete(self.keys.pin())
                    pipe.execute()
                except redis.WatchError:
                    continue
                if snap.pin and chosen.pinned is None:
                    log.info("pin on %s dropped: it is gone or not healthy", snap.pin)
                _log_change(snap.selection, chosen)
                return chosen


def _log_change(before: Selection | None, after: Selection) -> None:
    """A new current LLM (or none) is logged once, by the pass that stored it."""
    old = before.current.id if before and before.current else None
    new = after.current.id if after.current else None
    if old == new:
        return
    if after.current is None:  # jobs wait from now on: worth a warning
        log.warning("selection: %s -> none (no LLM available)", old)
    else:
        log.info("selection: %s -> %s (%s)", old or "none", new, after.current.model_name)
