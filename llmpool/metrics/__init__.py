"""Prometheus metrics of the whole pool, aggregated in Redis (see docs/architecture.md, "Metrics")."""

from llmpool.metrics.recorder import MetricsRecorder
from llmpool.metrics.runs import RunFacts
from llmpool.metrics.store import MetricsStore

__all__ = ["MetricsRecorder", "MetricsStore", "RunFacts"]
