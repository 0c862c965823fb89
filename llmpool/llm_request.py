"""Building the HTTP request for one chat call, as the TT-Studio agent builds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmpool.auth import cloud_bearer_token, container_bearer_token
from llmpool.endpoints import Endpoint
from llmpool.schemas import ChatJob
from llmpool.settings import Settings

__all__ = ["LLMRequest", "build_request", "DEFAULT_MAX_TOKENS"]

DEFAULT_MAX_TOKENS = 2048
# TT-Studio's sampling for its vLLM containers; the cloud gets plain OpenAI fields only.
VLLM_SAMPLING = {"temperature": 0.6, "top_k": 20, "top_p": 0.9}
VLLM_STOP = ["<|eot_id|>"]
CLOUD_TEMPERATURE = 0.7


@dataclass(frozen=True)
class LLMRequest:
    url: str
    headers: dict[str, str] = field(repr=False)  # holds the bearer: never print it
    body: dict[str, Any]


def _bearer(endpoint: Endpoint, settings: Settings) -> str | None:
    if endpoint.auth == "cloud":
        return cloud_bearer_token(settings)
    if endpoint.auth == "container":
        return container_bearer_token(settings)
    return None


def _body(endpoint: Endpoint, job: ChatJob, *, stream: bool) -> dict[str, Any]:
    messages = [m.model_dump(exclude_none=True) for m in job.messages]
    body: dict[str, Any] = {"model": endpoint.model, "messages": messages}
    if endpoint.flavor == "vllm":
        body.update(VLLM_SAMPLING)
        body["stop"] = list(VLLM_STOP)
    else:
        body["temperature"] = CLOUD_TEMPERATURE
    if job.temperature is not None:
        body["temperature"] = job.temperature
    body["max_tokens"] = job.max_tokens or DEFAULT_MAX_TOKENS
    body["stream"] = stream
    if stream:
        usage: dict[str, bool] = {"include_usage": True}
        if endpoint.flavor == "vllm":
            usage["continuous_usage_stats"] = True
        body["stream_options"] = usage
    if job.tools:
        body["tools"] = job.tools
        body["tool_choice"] = "auto"
    return body


def build_request(
    endpoint: Endpoint, job: ChatJob, settings: Settings, *, stream: bool = True
) -> LLMRequest:
    """The URL, headers and JSON body for one chat completion call to `endpoint`."""
    headers = {"Content-Type": "application/json"}
    headers["Accept"] = "text/event-stream" if stream else "application/json"
    token = _bearer(endpoint, settings)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return LLMRequest(url=endpoint.chat_url, headers=headers, body=_body(endpoint, job, stream=stream))
