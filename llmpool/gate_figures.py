"""The gate's figures per endpoint, for people and for a metrics exporter.

`read_gate_figures` reads, in one round trip, what /status and `llmpool status` show of each
endpoint's gate: its breaker (with `suspect`, `suspicions`, `failed_trials`), its TTFT figures
(percentiles, the adaptive first-token timeout, the suspicion threshold, calls waiting for a first
token) and the concurrency it may hold (`max_concurrency`: its own cap, or its share of the fleet's
chat slots; 0 = none). `exported_numbers` flattens them into plain per-endpoint numbers, the shape a
Prometheus exporter publishes as gauges labelled by endpoint.
"""

from __future__ import annotations

import math
from typing import Any

from llmpool.admission import Admitter, limits_for
from llmpool.endpoints import Endpoint
from llmpool.settings import Settings
from llmpool.share import chat_slots
from llmpool.ttft import ttft_config

__all__ = ["read_gate_figures", "exported_numbers", "share_base"]


def share_base(selected: int, worker_figures: list[dict[str, Any]]) -> int:
    """The chat slots each endpoint's share is taken of: none while at most one endpoint is selected."""
    return chat_slots(worker_figures) if selected > 1 else 0


def read_gate_figures(admitter: Admitter, settings: Settings, endpoints: list[Endpoint], *,
                      fleet_slots: int = 0) -> dict[str, dict[str, Any]]:
    """Breaker, TTFT and concurrency figures of each endpoint, by id (module docstring)."""
    figures = admitter.stats([e.id for e in endpoints], ttft=ttft_config(settings))
    for endpoint in endpoints:
        cap = limits_for(endpoint, settings, fleet_slots=fleet_slots).max_concurrency
        figures[endpoint.id]["max_concurrency"] = cap
    return figures


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def exported_numbers(figures: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per endpoint id, the figures as plain numbers (NaN where unknown, e.g. a cold endpoint's p95)."""
    out = {}
    for endpoint_id, f in figures.items():
        ttft = f.get("ttft", {})
        since = ttft.get("since_progress")
        out[endpoint_id] = {
            "suspect": float(bool(f.get("suspect"))), "suspicions_total": float(f.get("suspicions", 0)),
            "breaker_open": float(f.get("state") != "closed"), "failed_trials": float(f.get("failed_trials", 0)),
            "in_flight": float(f.get("in_flight", 0)), "max_concurrency": float(f.get("max_concurrency", 0)),
            "ttft_samples": float(ttft.get("samples", 0)), "ttft_p50_seconds": _number(ttft.get("p50")),
            "ttft_p95_seconds": _number(ttft.get("p95")), "ttft_p99_seconds": _number(ttft.get("p99")),
            "first_token_timeout_seconds": _number(ttft.get("first_token_timeout")),
            "suspect_after_seconds": _number(ttft.get("suspect_after")),
            "awaiting_first_token": float(ttft.get("awaiting_first_token", 0)),
            "longest_first_token_wait_seconds": float(ttft.get("longest_wait", 0.0)),
            "seconds_since_progress": math.inf if since is None else float(since),
        }
    return out
