"""The endpoints settings name (cloud, the named container, the local host LLM) as a source."""

from __future__ import annotations

from llmpool.discovery.source import SourceResult
from llmpool.endpoints import cloud_endpoint, container_endpoint, local_endpoint
from llmpool.settings import Settings

__all__ = ["STATIC_SOURCE", "discover_static"]

STATIC_SOURCE = "static"


def discover_static(settings: Settings) -> SourceResult:
    """Cloud, the named container and the local host LLM, each only when settings enable it.

    The order here is not the fallback order: ranking (cloud first or last) is the registry's.
    """
    cloud_wanted = settings.use_cloud_llm or settings.agent_fallback_to_cloud
    candidates = [
        cloud_endpoint(settings) if cloud_wanted else None,
        container_endpoint(settings),
        local_endpoint(settings) if settings.agent_fallback_to_local else None,
    ]
    return SourceResult(STATIC_SOURCE, True, [e for e in candidates if e is not None])
