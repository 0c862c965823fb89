"""What the registry looks like to people: rows for /status and `llmpool status`, TT-Studio names."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from llmpool.endpoints import Endpoint
from llmpool.health import Health
from llmpool.registry import Snapshot
from llmpool.selection import Selection
from llmpool.server_load import ServerLoad

__all__ = ["llm_info", "current_llm", "endpoint_rows", "effective_current", "discovery_summary", "model_info",
           "render_table"]

STATES = ("healthy", "degraded", "unhealthy", "unknown", "starting")


def llm_info(endpoint: Endpoint) -> str:
    """The TT-Studio agent's one-line description of the LLM in use."""
    if endpoint.is_cloud:
        return f"Cloud: {endpoint.model_name}"
    if endpoint.source == "container":
        return f"Container: {endpoint.chat_url}"
    if endpoint.source == "local":
        return f"Local: {endpoint.model_name} at {endpoint.chat_url}"
    return f"Discovered: {endpoint.model_name}"


def current_llm(endpoint: Endpoint) -> dict[str, Any]:
    return {"server_url": endpoint.chat_url, "is_cloud": endpoint.is_cloud,
            "is_discovered": endpoint.source in ("discovered", "openai", "ollama"),
            "llm_info": llm_info(endpoint), "deploy_id": endpoint.id, "model_name": endpoint.model_name,
            "model": endpoint.model}


def _state(endpoint: Endpoint, health: dict[str, Health], checks_enabled: bool) -> str:
    if endpoint.is_cloud or not checks_enabled:
        return "healthy"
    return health.get(endpoint.id, Health()).state


def model_info(endpoint: Endpoint, state: str) -> dict[str, Any]:
    return {"deploy_id": endpoint.id, "model_name": endpoint.model_name,
            "model_type": endpoint.model_type, "status": state,
            "container_name": endpoint.container_name or endpoint.id}


def effective_current(selection: Selection | None, breakers: dict[str, dict[str, Any]]) -> Endpoint | None:
    """The endpoint jobs go to now: the first selected one whose breaker is not open."""
    for endpoint in (selection.order if selection else []):
        if breakers.get(endpoint.id, {}).get("state") != "open":
            return endpoint
    return None


def endpoint_rows(snap: Snapshot, *, checks_enabled: bool, breakers: dict[str, dict[str, Any]] | None = None,
                  loads: dict[str, ServerLoad] | None = None) -> list[dict[str, Any]]:
    """Every registered endpoint with its health, breaker, server load and whether it is the current one."""
    selection = snap.selection or Selection()
    breakers = breakers or {}
    loads = loads or {}
    chosen = effective_current(selection, breakers)
    current = chosen.id if chosen else None
    rank = {e.id: i for i, e in enumerate(selection.order)}
    rows = []
    for endpoint_id, record in snap.records.items():
        endpoint, health = record.endpoint, snap.health.get(endpoint_id, Health())
        rows.append({
            **model_info(endpoint, _state(endpoint, snap.health, checks_enabled)),
            "internal_url": endpoint.chat_url, "health_url": endpoint.health_url,
            "source": endpoint.source, "model": endpoint.model, "is_current": endpoint_id == current,
            "kind": endpoint.kind, "quantization": endpoint.quantization, "slots": endpoint.slots,
            "is_pinned": endpoint_id == selection.pinned, "rank": rank.get(endpoint_id),
            "latency": health.latency, "last_check": health.last_check, "last_error": health.last_error,
            "consecutive_failures": health.consecutive_failures, "missing_since": record.missing_since,
            "breaker": breakers.get(endpoint_id),
            "server_load": asdict(loads[endpoint_id]) if endpoint_id in loads else None,
        })
    return sorted(rows, key=lambda r: (r["rank"] is None, r["rank"] or 0, r["deploy_id"]))


def discovery_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {state: sum(1 for r in rows if r["status"] == state) for state in STATES}
    llms = [{k: r[k] for k in ("deploy_id", "model_name", "status", "internal_url")} for r in rows]
    # total_llms is the TT-Studio agent's name; total is llmpool's earlier one, kept for its readers.
    return {"total_llms": len(rows), "total": len(rows), **counts, "llms": llms}


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}s" if value < 10 else f"{value:.0f}s"


def _breaker_cell(breaker: dict[str, Any]) -> str:
    """The breaker's state; "suspect" while admission holds the endpoint for hanging (llmpool.ttft)."""
    if breaker.get("suspect"):
        return "suspect" if breaker.get("state") == "open" else "suspect-trial"
    return str(breaker.get("state", "-"))


def _server_load_cell(load: dict[str, Any] | None) -> str:
    """The server's own figure: running+waiting, and its slots or KV-cache use when it gives them."""
    if not load:
        return "-"
    cell = f"{load['running']}+{load['waiting']}"
    if load.get("slots"):
        cell += f"/{load['slots']} slots"
    elif load.get("cache_use") is not None:
        cell += f" kv {load['cache_use']:.0%}"
    return cell


def render_table(rows: list[dict[str, Any]]) -> str:
    """The registry as a plain-text table for the terminal."""
    headers = ["", "rank", "id", "model", "source", "kind", "health", "breaker", "in-flight", "server load",
               "ttft p95", "1st-token t/o", "latency", "fails", "last error"]
    lines = [headers]
    for r in rows:
        mark = "*" if r["is_current"] else ("P" if r["is_pinned"] else "")
        latency = f"{r['latency'] * 1000:.0f}ms" if r["latency"] is not None else "-"
        breaker = r.get("breaker") or {}
        ttft = breaker.get("ttft") or {}
        cap = breaker.get("max_concurrency")
        in_flight = str(breaker.get("in_flight", "-")) + (f"/{cap}" if cap else "")
        lines.append([mark, "-" if r["rank"] is None else str(r["rank"]), r["deploy_id"][:24],
                      r["model_name"][:32], r["source"], str(r.get("kind") or "-"), r["status"], _breaker_cell(breaker),
                      in_flight, _server_load_cell(r.get("server_load")), _seconds(ttft.get("p95")),
                      _seconds(ttft.get("first_token_timeout")), latency, str(r["consecutive_failures"]),
                      (r["last_error"] or "")[:40]])
    widths = [max(len(row[i]) for row in lines) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in lines)
