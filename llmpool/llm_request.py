"""Building the HTTP request for one chat call, as the TT-Studio agent builds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmpool.auth import cloud_bearer_token, container_bearer_token
from llmpool.endpoints import Endpoint
from llmpool.schemas import ChatJob, Message
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


def _wire_message(message: Message, *, cloud: bool) -> dict[str, Any]:
    """One message as the endpoint can take it.

    Local servers apply the model's chat template, which knows system/user/assistant/tool only:
    llama-cpp-python answers `developer` with a 500, Ollama leaves it to the template, llama.cpp
    maps it to system only since ggml-org/llama.cpp#20215. OpenAI itself treats developer as
    system's newer name, so anywhere but the cloud it is sent as system.
    An assistant turn with tool_calls and no content carries `""`: llama-cpp-python's template
    fails on a missing or null content (a 500), and OpenAI and vLLM accept the empty string.
    """
    wire = message.model_dump(exclude_none=True)
    if wire["role"] == "developer" and not cloud:
        wire["role"] = "system"
    if wire["role"] == "assistant" and message.tool_calls and message.content is None:
        wire["content"] = ""
    return wire


def _body(endpoint: Endpoint, job: ChatJob, *, stream: bool) -> dict[str, Any]:
    cloud = endpoint.is_cloud or endpoint.kind == "cloud"
    messages = [_wire_message(m, cloud=cloud) for m in job.messages]
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
    if isinstance(job.tools, list) and job.tools:  # "builtin"/"auto" are the worker's, replaced before a call
        body["tools"] = job.tools
        body["tool_choice"] = job.tool_choice if job.tool_choice is not None else "auto"
    _add_openai_fields(body, job, endpoint)
    return body


def _add_openai_fields(body: dict[str, Any], job: ChatJob, endpoint: Endpoint) -> None:
    """The job's own sampling and output fields; a vLLM server keeps its end-of-turn stop too."""
    if job.top_p is not None:
        body["top_p"] = job.top_p
    if job.stop is not None:
        stops = [job.stop] if isinstance(job.stop, str) else list(job.stop)
        body["stop"] = [*body.get("stop", []), *stops] if endpoint.flavor == "vllm" else stops
    for name in ("seed", "response_format", "user"):
        value = getattr(job, name)
        if value is not None:
            body[name] = value


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
