"""POST /refresh, POST|DELETE /select_model, GET /test_llm, POST /refresh_config."""

from __future__ import annotations

import time
from typing import Annotated, Any

from celery.exceptions import TimeoutError as CeleryTimeout
from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import ApiState, get_state
from llmpool.errors import ConfigError, LLMPoolError, LocalShortage
from llmpool.input_limits import InputLimits
from llmpool.llm_request import build_request
from llmpool.registry import Snapshot
from llmpool.schemas import parse_job
from llmpool.settings import get_settings
from llmpool.status_view import endpoint_rows, llm_info, model_info

router = APIRouter()

REFRESH_TIMEOUT = 60.0  # a discovery and a health pass, each bounded by its own timeouts
BROADCAST_TIMEOUT = 2.0
DeployId = Annotated[str, Field(min_length=1, max_length=300)]


class SelectBody(BaseModel):
    deploy_id: DeployId


ERROR_TYPES = {404: "not_found", 409: "conflict", 422: "invalid_request", 503: "unavailable", 504: "timeout"}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    """The TT-Studio agent's {"status", "message"}, plus the `error` object every other route sends."""
    error = {"type": ERROR_TYPES.get(status, "error"), "message": message}
    return JSONResponse({"status": "error", "message": message, "error": error, **extra}, status_code=status)


def _models(state: ApiState, snap: Snapshot) -> list[dict[str, Any]]:
    rows = endpoint_rows(snap, checks_enabled=state.settings.agent_health_check_enabled)
    return [{k: r[k] for k in ("deploy_id", "model_name", "model_type", "status", "container_name")}
            for r in rows]


def _run_refresh(state: ApiState) -> dict[str, Any]:
    result = state.celery.send_task("llmpool.control.refresh", queue="control")
    try:
        return dict(result.get(timeout=REFRESH_TIMEOUT))
    finally:
        result.forget()


@router.post("/refresh", summary="Run discovery and health checks now; the old and new selection.")
async def refresh(state: Annotated[ApiState, Depends(get_state)]) -> JSONResponse:
    try:
        outcome = await run_in_threadpool(_run_refresh, state)
    except CeleryTimeout:
        return _error(504, f"No worker finished the refresh within {REFRESH_TIMEOUT:g}s "
                           "(is a worker consuming the control queue?)")
    snap = await run_in_threadpool(state.registry.snapshot)
    models = _models(state, snap)
    old, new = outcome["old"], outcome["new"]
    if new["current"] is None:
        message = ("No suitable LLM found among discovered models" if models
                   else "No LLMs available and no fallback configured")
        return _error(503, message, old_model=old["model"], new_model=None, available_models=models)
    return JSONResponse({"status": "success", "message": "LLM refreshed successfully",
                         "old_model": old["model"], "new_model": new["model"],
                         "available_models": models, "details": outcome})


def _select(state: ApiState, deploy_id: str) -> JSONResponse:
    snap = state.registry.snapshot()
    record = snap.records.get(deploy_id)
    if record is None:
        return _error(404, f"Model with deploy_id {deploy_id} not found",
                      available_models=_models(state, snap))
    row = next(r for r in endpoint_rows(snap, checks_enabled=state.settings.agent_health_check_enabled)
               if r["deploy_id"] == deploy_id)
    name = record.endpoint.model_name
    if row["status"] not in ("healthy", "degraded"):
        return _error(409, f"Model {name} is unhealthy (status: {row['status']})")
    old = snap.selection.current if snap.selection else None
    state.registry.set_pin(deploy_id)
    chosen = state.registry.recompute(state.settings, now=time.time())
    if chosen.pinned != deploy_id:
        return _error(409, f"Model {name} could not be selected (status changed)")
    return JSONResponse({"status": "success", "message": f"Successfully switched to {name}",
                         "old_model": old.model_name if old else None, "new_model": name,
                         "model_info": model_info(record.endpoint, row["status"])})


@router.post("/select_model", summary="Pin one endpoint (query `deploy_id` or JSON body) until it fails.")
async def select_model(
    state: Annotated[ApiState, Depends(get_state)],
    deploy_id: Annotated[str | None, Query(min_length=1, max_length=300)] = None,
    body: Annotated[SelectBody | None, Body()] = None,
) -> JSONResponse:
    chosen = deploy_id or (body.deploy_id if body else None)
    if chosen is None:
        return _error(422, "deploy_id is required (query parameter or JSON body)")
    return await run_in_threadpool(_select, state, chosen)


def _unpin(state: ApiState) -> dict[str, Any]:
    state.registry.set_pin(None)
    chosen = state.registry.recompute(state.settings, now=time.time())
    current = chosen.current
    return {"status": "success", "message": "Unpinned: the selection follows the ranking again",
            "new_model": current.model_name if current else None}


@router.delete("/select_model", summary="Remove the pin.")
async def unselect_model(state: Annotated[ApiState, Depends(get_state)]) -> dict[str, Any]:
    return await run_in_threadpool(_unpin, state)


TEST_JOB = parse_job({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
CONNECTION_OK = (200, 400, 422)  # the TT-Studio agent's rule: the server answered sensibly


def _test_llm(state: ApiState) -> JSONResponse:
    selection = state.registry.selection()
    endpoint = selection.current if selection else None
    if endpoint is None:
        return _error(503, "No LLM configured")
    request = build_request(endpoint, TEST_JOB, state.settings, stream=False)
    started = time.monotonic()
    body: dict[str, Any] = {"llm_url": endpoint.chat_url, "llm_info": llm_info(endpoint)}
    try:
        response = state.llm.send(request, timeout=state.settings.agent_health_check_timeout * 2)
    except LLMPoolError as exc:  # the endpoint's failure is a 502; a shortage of our own is not its fault
        return JSONResponse({"status": "error", **body, "connection_test": False,
                             "error": exc.to_dict()}, status_code=503 if isinstance(exc, LocalShortage) else 502)
    ok = response.status_code in CONNECTION_OK
    body.update(connection_test=ok, http_status=response.status_code,
                latency=time.monotonic() - started)
    return JSONResponse({"status": "success" if ok else "error", **body}, status_code=200 if ok else 502)


@router.get("/test_llm", summary="A one-token completion against the selected LLM.")
async def test_llm(state: Annotated[ApiState, Depends(get_state)]) -> JSONResponse:
    return await run_in_threadpool(_test_llm, state)


def _refresh_config(state: ApiState) -> JSONResponse:
    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ConfigError as exc:
        return _error(503, f"Configuration not reloaded: {exc}")
    state.settings = settings
    state.client.limits = InputLimits.from_settings(settings)  # the auth middleware follows state.settings
    replies = state.celery.control.broadcast("refresh_config", reply=True, timeout=BROADCAST_TIMEOUT)
    state.registry.recompute(settings, now=time.time())
    return JSONResponse({
        "status": "success", "message": "Configuration refreshed successfully",
        "current_config": {
            "priority_models": settings.agent_priority_models,
            "model_type_priority": ["chat"],
            "auto_discovery_enabled": settings.agent_auto_discovery,
            "health_check_enabled": settings.agent_health_check_enabled,
            "fallback_to_local": settings.agent_fallback_to_local,
            "use_cloud_llm": settings.use_cloud_llm,
        },
        "workers_reloaded": len(replies or []),
    })


@router.post("/refresh_config", summary="Re-read settings in the API and every worker.")
async def refresh_config(state: Annotated[ApiState, Depends(get_state)]) -> JSONResponse:
    return await run_in_threadpool(_refresh_config, state)
