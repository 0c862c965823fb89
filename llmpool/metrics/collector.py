"""The Prometheus view of the whole pool, read from Redis at scrape time (the API serves it).

Counted families come from the fleet's metric hashes (`MetricsStore`); live ones from the pool's
own state: Celery's queue lengths, the job sets, the breakers and the registry's health. Any API
process answers with the same fleet-wide numbers, so Prometheus scrapes one of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from llmpool.admission import DEFAULT_TTFT, Admitter
from llmpool.gate_figures import exported_numbers
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.metrics.catalog import BREAKER_STATES, LIVE, NO_ENDPOINT, Family, format_bound
from llmpool.metrics.store import MetricsStore, Stored
from llmpool.registry import Registry, Snapshot
from llmpool.schemas import QUEUES
from llmpool.status_view import endpoint_rows
from llmpool.ttft import TtftConfig

__all__ = ["PoolCollector", "exposition"]

HEALTH_STATES = ("healthy", "degraded", "unhealthy", "unknown", "starting")


def _counter(family: Family, stored: Stored, models: dict[str, str]) -> Metric:
    metric = CounterMetricFamily(family.stem, family.help, labels=family.exported_labels)
    at = family.labels.index("endpoint") if family.joins_model else -1
    for labels, value in sorted(stored.values.items()):
        extra = (models.get(labels[at], NO_ENDPOINT),) if family.joins_model else ()
        metric.add_metric([*labels, *extra], value)
    return metric


def _histogram(family: Family, stored: Stored) -> Metric:
    metric = HistogramMetricFamily(family.name, family.help, labels=family.labels)
    series: dict[tuple[str, ...], dict[str, float]] = {}
    for parts, value in stored.values.items():
        series.setdefault(parts[:-1], {})[parts[-1]] = value
    for labels, cells in sorted(series.items()):
        total = cells.pop("sum", 0.0)
        count = sum(cells.values())  # a bucket of an older bucket list still counts, in +Inf
        buckets, running = [], 0.0
        for bound in family.buckets:
            running += cells.get(format_bound(bound), 0.0)
            buckets.append((floatToGoString(bound), running))
        buckets.append(("+Inf", count))
        metric.add_metric(list(labels), buckets, total)
    return metric


def _gauge(name: str, rows: list[tuple[list[str], float]]) -> Metric:
    family = LIVE[name]
    kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    metric = kind(family.stem, family.help, labels=family.labels)
    for labels, value in rows:
        metric.add_metric(labels, value)
    return metric


class PoolCollector(Collector):
    """Reads everything at each scrape: a handful of round trips, whatever the fleet's size."""

    def __init__(self, client: redis.Redis, keys: Keys, *, checks_enabled: bool = True,
                 ttft: TtftConfig = DEFAULT_TTFT) -> None:
        self.redis = client
        self.keys = keys
        self.checks_enabled = checks_enabled
        self.ttft = ttft
        self.store = MetricsStore(client, keys)
        self.registry = Registry(client, keys)
        self.admitter = Admitter(client, keys)
        self.jobs = JobStore(client, keys, ttl=1, stream_ttl=1)  # read-only here: the TTLs are never used

    def collect(self) -> Iterator[Metric]:
        # The series before the registry: a series read here was written for an endpoint that was
        # registered when it was used, so one that is new since is never taken for one that left.
        raw = self.store.read()
        snap = self.registry.snapshot()
        models = {e: r.endpoint.model_name for e, r in snap.records.items()}
        stored = self.store.forget_endpoints(raw, keep=set(snap.records))
        for item in stored:
            family = item.family
            yield _histogram(family, item) if family.kind == "histogram" else _counter(family, item, models)
        yield from self._queues()
        yield from self._endpoints(snap)

    def _queues(self) -> Iterator[Metric]:
        pipe = self.redis.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(self.keys.celery_queue(queue))
        depths = pipe.execute()
        yield _gauge("llmpool_queue_depth", [([q], float(n)) for q, n in zip(QUEUES, depths, strict=True)])
        counts = self.jobs.counts()
        yield _gauge("llmpool_jobs_waiting", [([], float(counts["parked"]))])
        yield _gauge("llmpool_jobs_running", [([], float(counts["running"]))])
        yield _gauge("llmpool_jobs_unpublished", [([], float(counts["unpublished"]))])

    def _endpoints(self, snap: Snapshot) -> Iterator[Metric]:
        breakers = self.admitter.stats(list(snap.records), ttft=self.ttft)
        rows = endpoint_rows(snap, checks_enabled=self.checks_enabled, breakers=breakers)
        yield _gauge("llmpool_breaker_state", [([r["deploy_id"]], float(BREAKER_STATES[_breaker(r)["state"]]))
                                               for r in rows])
        yield _gauge("llmpool_breaker_trips_total", [([r["deploy_id"]], float(_breaker(r)["trips"])) for r in rows])
        yield _gauge("llmpool_endpoint_in_flight", [([r["deploy_id"]], float(_breaker(r)["in_flight"]))
                                                    for r in rows])
        yield _gauge("llmpool_endpoint_health", [([r["deploy_id"], s], float(r["status"] == s))
                                                 for r in rows for s in HEALTH_STATES])
        yield _gauge("llmpool_endpoint_probe_latency_seconds", [([r["deploy_id"]], float(r["latency"]))
                                                                for r in rows if r["latency"] is not None])
        yield _gauge("llmpool_endpoint_info", [
            ([r["deploy_id"], r["model_name"], r["source"], str(-1 if r["rank"] is None else r["rank"])], 1.0)
            for r in rows])
        yield _gauge("llmpool_endpoint_current", [([r["deploy_id"]], float(r["is_current"])) for r in rows])
        gate = exported_numbers(breakers)
        for name, field in (("llmpool_endpoint_suspect", "suspect"),
                            ("llmpool_endpoint_suspicions_total", "suspicions_total"),
                            ("llmpool_endpoint_first_token_timeout_seconds", "first_token_timeout_seconds"),
                            ("llmpool_endpoint_ttft_p95_seconds", "ttft_p95_seconds"),
                            ("llmpool_endpoint_awaiting_first_token", "awaiting_first_token")):
            yield _gauge(name, [([endpoint], value) for endpoint, figures in gate.items()
                                if not math.isnan(value := figures[field])])


def _breaker(row: dict[str, Any]) -> dict[str, Any]:
    return row.get("breaker") or {"state": "closed", "trips": 0, "in_flight": 0}


def exposition(collector: PoolCollector) -> bytes:
    """The text format Prometheus scrapes, read now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
