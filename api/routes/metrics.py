"""GET /metrics: the whole pool in Prometheus' text format, read from Redis at scrape time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from api.deps import ApiState, get_state
from llmpool.metrics.collector import exposition

router = APIRouter()


@router.get("/metrics", summary="Prometheus metrics of every worker on every host (fleet-wide, from Redis).",
            response_class=Response)
async def metrics(state: Annotated[ApiState, Depends(get_state)]) -> Response:
    body = await run_in_threadpool(exposition, state.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
