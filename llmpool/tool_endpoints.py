"""Which endpoints get jobs that use the built-in tools: those that can call tools.

An endpoint can when TT-Studio's backend marks it `tool_calling_enabled`, when it is an
OpenAI-compatible server named by the operator (AGENT_OPENAI_SERVERS) or the cloud (both speak
OpenAI's tools API), or when AGENT_TOOL_ENDPOINTS names its id or model ("*": every endpoint).
A TT-Studio container without the flag may run a model whose server has no tool parser: it
would answer tool schemas with text that looks like a call, so it is not offered tools.
"""

from __future__ import annotations

from llmpool.endpoints import Endpoint
from llmpool.settings import Settings

__all__ = ["tool_capable", "tool_capable_only"]

OPENAI_SOURCES = ("cloud", "openai")


def tool_capable(endpoint: Endpoint, settings: Settings) -> bool:
    named = {name.lower() for name in settings.agent_tool_endpoints}
    return (endpoint.tool_calling or endpoint.source in OPENAI_SOURCES or "*" in named
            or endpoint.id.lower() in named or endpoint.model.lower() in named
            or endpoint.model_name.lower() in named)


def tool_capable_only(candidates: list[Endpoint], settings: Settings) -> list[Endpoint]:
    """The candidates that can call tools, in their order."""
    return [e for e in candidates if tool_capable(e, settings)]
