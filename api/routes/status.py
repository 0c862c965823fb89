"""GET / and GET /status, in the TT-Studio agent's shape with real status codes."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api.deps import ApiState, get_state
from llmpool.gate_figures import read_gate_figures, share_base
from llmpool.heartbeats import ALIVE_FOR, WorkerHeartbeats, by_host
from llmpool.hedging import hedging_status
from llmpool.redis_memory import parse_memory
from llmpool.registry import Snapshot
from llmpool.schemas import QUEUES
from llmpool.server_load import LoadStore
from llmpool.status_view import current_llm, discovery_summary, effective_current, endpoint_rows, llm_info

router = APIRouter()

WAITING_MESSAGE = "Agent server is running but waiting for LLM"


def _read(state: ApiState) -> tuple[Snapshot, dict[str, Any]]:
    """The registry, breakers, live workers with their figures, queue depths, Redis memory and the
    servers' own load figures, in four round trips."""
    snap = state.registry.snapshot()
    heartbeats = WorkerHeartbeats(state.redis, state.keys)
    pipe = state.redis.pipeline(transaction=False)
    heartbeats.alive_names(pipe, since=time.time() - ALIVE_FOR)
    for queue in QUEUES:
        pipe.llen(state.keys.celery_queue(queue))
    pipe.info("memory")
    endpoint_ids = list(snap.records)
    load_store = LoadStore(state.redis, state.keys)
    load_store.ask_figures(pipe, endpoint_ids)
    replies = pipe.execute()
    names, memory = replies[0], replies[1 + len(QUEUES)]
    depths, figures = replies[1:1 + len(QUEUES)], replies[2 + len(QUEUES):]  # figures: [] without endpoints
    workers = heartbeats.figures(names)
    selected = len(snap.selection.order) if snap.selection else 0
    breakers = read_gate_figures(state.admitter, state.settings, [r.endpoint for r in snap.records.values()],
                                 fleet_slots=share_base(selected, workers))
    return snap, {"workers": len(names), "hosts": by_host(workers),
                  "queues": dict(zip(QUEUES, map(int, depths), strict=True)),
                  "redis_memory": parse_memory(memory, warn_at=state.settings.agent_redis_memory_warn).to_dict(),
                  "breakers": breakers,
                  "loads": load_store.decode_figures(endpoint_ids, figures[0]) if figures else {}}


def _next_poll(state: ApiState) -> str:
    """The TT-Studio agent's wording ("Will retry every 3 minutes" by default)."""
    seconds = state.settings.agent_llm_polling_interval
    if seconds % 60 == 0:
        return f"Will retry every {seconds / 60:g} minutes"
    return f"Will retry every {seconds:g} seconds"


def _monitoring(state: ApiState, snap: Snapshot) -> dict[str, Any]:
    s = state.settings
    checks = [h.last_check for h in snap.health.values() if h.last_check]
    return {"enabled": s.agent_health_check_enabled, "interval": s.agent_health_check_interval,
            "timeout": s.agent_health_check_timeout, "max_failures": s.agent_max_failures,
            "recovery_successes": s.agent_health_recovery_successes,
            "last_check": max(checks) if checks else None}


@router.get("/health", summary="Liveness of this API process (for orchestrators; no Redis read, no token).")
async def health() -> dict[str, str]:
    # Deliberately independent of Redis and the LLMs: an orchestrator restarting the API because
    # Redis or every LLM is down would only add an outage. Readiness is GET / and /status.
    return {"status": "ok"}


@router.get("/", summary="Liveness and the LLM in use.")
async def root(state: Annotated[ApiState, Depends(get_state)]) -> dict[str, Any]:
    snap, live = await run_in_threadpool(_read, state)
    current = effective_current(snap.selection, live["breakers"])
    if current is None:
        return {"message": WAITING_MESSAGE, "status": "initializing", "llm_mode": "none",
                "llm_info": "No LLM available yet", "health_monitoring": "N/A",
                "discovery_summary": "N/A", "next_poll": _next_poll(state)}
    rows = endpoint_rows(snap, checks_enabled=state.settings.agent_health_check_enabled, breakers=live["breakers"])
    return {"message": "Agent server is running", "status": "ready",
            "llm_mode": "cloud" if current.is_cloud else "local", "llm_info": llm_info(current),
            "health_monitoring": _monitoring(state, snap), "discovery_summary": discovery_summary(rows)}


@router.get("/status", summary="Selection, endpoints and health, configuration (redacted), workers per host, queues.")
async def status(state: Annotated[ApiState, Depends(get_state)]) -> dict[str, Any]:
    snap, live = await run_in_threadpool(_read, state)
    selection = snap.selection
    breakers = live.pop("breakers")
    current = effective_current(selection, breakers)
    rows = endpoint_rows(snap, checks_enabled=state.settings.agent_health_check_enabled, breakers=breakers,
                         loads=live.pop("loads"))
    return {
        "status": "ready" if current else "initializing",
        "message": "Agent server is running" if current else WAITING_MESSAGE,
        "current_llm": current_llm(current) if current else None,
        "pinned": selection.pinned if selection else None,
        "available_models": rows,
        "discovery_summary": discovery_summary(rows),
        "health_monitoring": _monitoring(state, snap),
        "configuration": state.settings.redacted(),
        "api": {**state.hub.stats(), "redis_connections": state.settings.agent_api_redis_connections},
        "hedging": hedging_status(state.settings, {e: (b.get("ttft") or {}).get("hedge_after")
                                                   for e, b in breakers.items()}),
        "next_poll": None if current else _next_poll(state),
        **live,
    }
