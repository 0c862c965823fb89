"""A job naming a model no endpoint serves is refused at submit (404 model_not_found), before anything is stored."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from api.deps import ApiState
from llmpool.model_choice import require_model
from llmpool.schemas import ChatJob

__all__ = ["require_served_model"]


async def require_served_model(state: ApiState, job: ChatJob) -> None:
    """ModelNotFound unless some known chat endpoint (healthy or not) serves the job's model; one Redis read."""
    if job.model is None:
        return  # no model named: the selection serves it
    endpoints = (await run_in_threadpool(state.registry.snapshot)).endpoints
    require_model(job.model, endpoints, state.settings.agent_model_aliases)
