"""Fleet-wide counters and histograms in Redis: one hash per metric family, the only writer of them.

A field is the JSON list of a series' label values; a histogram adds its bucket's `le` (buckets
are stored non-cumulative: an observation adds 1 to one bucket) or "sum" as the last element.
Every worker adds with HINCRBY / HINCRBYFLOAT, which Redis applies atomically, so many processes
on many hosts sum up without a lock; a `Batch` gathers one job run's additions for a single
pipelined round trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis

from llmpool.codec import as_text
from llmpool.keys import Keys
from llmpool.metrics.catalog import COUNTED, NO_ENDPOINT, Family, bucket_of

__all__ = ["Batch", "MetricsStore", "MetricCommand", "Stored"]

SUM = "sum"
MetricCommand = tuple[str, str, str, int | float]  # ("HINCRBY" | "HINCRBYFLOAT", key, field, amount)


@dataclass
class Batch:
    """Additions gathered for one write: counter increments and histogram observations."""

    ints: dict[tuple[str, str], int] = field(default_factory=dict)  # (family stem, field) -> increment
    floats: dict[tuple[str, str], float] = field(default_factory=dict)

    def count(self, family: Family, labels: Sequence[str], amount: int = 1) -> None:
        if amount:
            slot = (family.stem, _field(labels))
            self.ints[slot] = self.ints.get(slot, 0) + amount

    def observe(self, family: Family, labels: Sequence[str], value: float) -> None:
        bucket = (family.stem, _field([*labels, bucket_of(family, value)]))
        self.ints[bucket] = self.ints.get(bucket, 0) + 1
        total = (family.stem, _field([*labels, SUM]))
        self.floats[total] = self.floats.get(total, 0.0) + value

    def merge(self, other: Batch) -> None:
        for slot, amount in other.ints.items():
            self.ints[slot] = self.ints.get(slot, 0) + amount
        for slot, value in other.floats.items():
            self.floats[slot] = self.floats.get(slot, 0.0) + value

    def __bool__(self) -> bool:
        return bool(self.ints or self.floats)


@dataclass(frozen=True)
class Stored:
    """One family as read back: label values (plus the bucket or "sum" for histograms) -> value."""

    family: Family
    values: dict[tuple[str, ...], float]


def _field(parts: Sequence[str]) -> str:
    return json.dumps([str(p) for p in parts], separators=(",", ":"))


def _parts(raw: object) -> tuple[str, ...] | None:
    try:
        parts = json.loads(as_text(raw))
    except ValueError:
        return None
    return tuple(str(p) for p in parts) if isinstance(parts, list) else None


class MetricsStore:
    """Adds to and reads the fleet's metric hashes."""

    def __init__(self, client: redis.Redis, keys: Keys, families: Iterable[Family] = COUNTED) -> None:
        self.redis = client
        self.keys = keys
        self.families = {f.stem: f for f in families}

    def write(self, batch: Batch) -> None:
        """Apply a batch in one round trip (a pipeline, not a transaction: each addition is atomic)."""
        if not batch:
            return
        pipe = self.redis.pipeline(transaction=False)
        for command in self.commands(batch):
            pipe.execute_command(*command)
        pipe.execute()

    def commands(self, batch: Batch) -> list[MetricCommand]:
        """The batch as HINCRBY / HINCRBYFLOAT commands, to send along with other writes."""
        return ([("HINCRBY", self.keys.metric(stem), name, amount) for (stem, name), amount in batch.ints.items()]
                + [("HINCRBYFLOAT", self.keys.metric(stem), name, value)
                   for (stem, name), value in batch.floats.items()])

    def read(self) -> list[Stored]:
        """Every family's series, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for stem in self.families:
            pipe.hgetall(self.keys.metric(stem))
        out = []
        for family, raw in zip(self.families.values(), pipe.execute(), strict=True):
            values = {}
            for name, value in raw.items():
                parts = _parts(name)
                width = len(family.labels) + (1 if family.kind == "histogram" else 0)
                if parts is not None and len(parts) == width:  # a field of another shape is not ours to show
                    values[parts] = float(as_text(value))
            out.append(Stored(family, values))
        return out

    def forget_endpoints(self, stored: Iterable[Stored], *, keep: set[str]) -> list[Stored]:
        """Delete the series of every endpoint not in `keep` (it left the registry): bounded labels.

        Returns `stored` without them. Series of no endpoint (`none`) stay.
        """
        keep = keep | {NO_ENDPOINT}
        pipe = self.redis.pipeline(transaction=False)
        kept, stale_fields = [], 0
        for item in stored:
            if "endpoint" not in item.family.labels:
                kept.append(item)
                continue
            at = item.family.labels.index("endpoint")
            stale = [parts for parts in item.values if parts[at] not in keep]
            if stale:
                pipe.hdel(self.keys.metric(item.family.stem), *(_field(parts) for parts in stale))
                stale_fields += len(stale)
            kept.append(Stored(item.family, {p: v for p, v in item.values.items() if p[at] in keep}))
        if stale_fields:
            pipe.execute()
        return kept
