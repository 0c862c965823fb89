"""Endpoints: one OpenAI-compatible chat server each, and the ones the settings name (cloud, container, local).

An Endpoint holds no secret: which bearer it gets is decided from settings when a request is
built (`llmpool.llm_request.build_request`), so endpoint records can be stored and shown freely.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from llmpool.settings import Settings

__all__ = ["Endpoint", "cloud_endpoint", "container_endpoint", "local_endpoint"]

Source = Literal["cloud", "container", "discovered", "openai", "ollama", "local"]
# "vllm" bodies carry TT-Studio's sampling extras (top_k, stop, continuous usage); "openai" bodies
# stay within the OpenAI schema, which strict servers (the cloud API) enforce.
Flavor = Literal["vllm", "openai"]
Auth = Literal["container", "cloud", "none"]

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Endpoint:
    id: str  # a TT-Studio container's deploy_id; `local`, `cloud`, `container:NAME`, `openai:...`
    chat_url: str
    model: str  # what requests send as "model" (hf_model_id for TT-Studio containers)
    model_name: str  # what ranking and people read
    source: Source
    flavor: Flavor = "vllm"
    auth: Auth = "container"
    health_url: str | None = None
    model_type: str = "chat"
    deploy_id: str | None = None
    container_name: str | None = None
    tool_calling: bool = False
    # What discovery learned of the server (llmpool.server_kinds): its kind, the quantization of
    # the model (ranking), and its parallel slots (llama.cpp: a concurrency cap; None: unknown).
    kind: str = "unknown"
    quantization: str | None = None
    slots: int | None = None
    container_starting: bool = False  # TT-Studio lists its container's Docker health as "starting"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Endpoint:
        """Rebuild a stored endpoint; fields a newer version added are ignored."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def is_cloud(self) -> bool:
        return self.source == "cloud"

    @property
    def base_url(self) -> str:
        """scheme://host:port[/prefix] without the chat path, for /health and /v1/models."""
        for suffix in (CHAT_PATH, "/chat/completions"):
            if self.chat_url.endswith(suffix):
                return self.chat_url[: -len(suffix)]
        return self.chat_url.rstrip("/")


def cloud_endpoint(settings: Settings) -> Endpoint | None:
    """The cloud endpoint (CLOUD_CHAT_UI_URL), or None when no URL is set."""
    if settings.cloud_chat_ui_url is None:
        return None
    return Endpoint(
        id="cloud",
        chat_url=settings.cloud_chat_ui_url,
        model=settings.cloud_model_name or "",
        model_name=settings.cloud_model_name or "cloud",
        source="cloud", flavor="openai", auth="cloud", kind="cloud",
    )


def container_endpoint(settings: Settings) -> Endpoint | None:
    """The container LLM_CONTAINER_NAME names (port 7000), or None when it is not set."""
    name = settings.llm_container_name
    if not name:
        return None
    base = f"http://{name}:7000"
    return Endpoint(
        id=f"container:{name}", chat_url=base + CHAT_PATH, model=settings.local_model_name,
        model_name=settings.local_model_name, source="container", health_url=base + "/health",
    )


def local_endpoint(settings: Settings) -> Endpoint:
    """The host LLM at LOCAL_LLM_HOST:LOCAL_LLM_PORT."""
    base = f"http://{settings.local_llm_host}:{settings.local_llm_port}"
    return Endpoint(
        id="local", chat_url=base + CHAT_PATH, model=settings.local_model_name,
        model_name=settings.local_model_name, source="local", health_url=base + "/health",
    )
