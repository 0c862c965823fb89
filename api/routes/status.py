"""GET / and GET /status, in the TT-Studio agent's shape with real status codes."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api.deps import ApiState, get_state
from llmpool.endpoints import Endpoint, static_chain
from llmpool.schemas import QUEUES

router = APIRouter()

WORKER_ALIVE_SECONDS = 10.0  # five missed heartbeats (Celery sends one every 2 s)
NEXT_POLL = "Will retry every {minutes:g} minutes"


def _llm_info(endpoint: Endpoint) -> str:
    if endpoint.is_cloud:
        return f"Cloud: {endpoint.model_name}"
    if endpoint.source == "container":
        return f"Container: {endpoint.chat_url}"
    if endpoint.source == "discovered":
        return f"Discovered: {endpoint.model_name}"
    return f"Local: {endpoint.model_name} at {endpoint.chat_url}"


def _current_llm(endpoint: Endpoint) -> dict[str, Any]:
    return {"server_url": endpoint.chat_url, "is_cloud": endpoint.is_cloud,
            "is_discovered": endpoint.source == "discovered", "llm_info": _llm_info(endpoint),
            "endpoint_id": endpoint.id, "model": endpoint.model}


def _live(state: ApiState) -> dict[str, Any]:
    """Worker count and queue depths, in one pipelined round trip."""
    pipe = state.redis.pipeline(transaction=False)
    pipe.zcount(state.keys.workers(), time.time() - WORKER_ALIVE_SECONDS, "+inf")
    for queue in QUEUES:
        pipe.llen(state.keys.celery_queue(queue))
    workers, *depths = pipe.execute()
    return {"workers": int(workers), "queues": dict(zip(QUEUES, map(int, depths), strict=True))}


@router.get("/", summary="Liveness and the LLM in use.")
async def root(state: Annotated[ApiState, Depends(get_state)]) -> dict[str, Any]:
    chain = static_chain(state.settings)
    if not chain:
        minutes = state.settings.agent_llm_polling_interval / 60
        return {"message": "Agent server is running but waiting for LLM", "status": "initializing",
                "llm_mode": "none", "llm_info": "No LLM available yet", "health_monitoring": "N/A",
                "discovery_summary": "N/A", "next_poll": NEXT_POLL.format(minutes=minutes)}
    current = chain[0]
    return {"message": "Agent server is running", "status": "ready",
            "llm_mode": "cloud" if current.is_cloud else "local", "llm_info": _llm_info(current)}


@router.get("/status", summary="Selection, endpoints, configuration (secrets redacted), workers, queues.")
async def status(state: Annotated[ApiState, Depends(get_state)]) -> dict[str, Any]:
    chain = static_chain(state.settings)
    live = await run_in_threadpool(_live, state)
    current = chain[0] if chain else None
    models = [{"deploy_id": e.id, "model_name": e.model_name, "model_type": "chat",
               "container_name": e.id, "internal_url": e.chat_url, "health_url": e.health_url,
               "status": "unknown", "is_current": e is current, "source": e.source} for e in chain]
    return {
        "status": "ready" if current else "initializing",
        "message": "Agent server is running" if current else "Agent server is running but waiting for LLM",
        "current_llm": _current_llm(current) if current else None,
        "available_models": models,
        "discovery_summary": {"total": len(chain), "healthy": 0, "degraded": 0, "unhealthy": 0},
        "configuration": state.settings.redacted(),
        **live,
    }
