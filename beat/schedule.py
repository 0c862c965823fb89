"""What beat schedules: discovery, health checks, the servers' load and the Redis memory watch, on
the `control` queue (workers sweep on their own)."""

from __future__ import annotations

from typing import Any

from llmpool.polling import discovery_every
from llmpool.settings import Settings

__all__ = ["beat_schedule"]

# A tick that waited in the queue past most of its interval is stale: the next one is coming.
EXPIRES_FRACTION = 0.9
REDIS_MEMORY_EVERY = 30.0  # seconds between two looks at Redis's memory (one INFO call)


def _entry(task: str, every: float) -> dict[str, Any]:
    return {"task": task, "schedule": every,
            "options": {"queue": "control", "expires": every * EXPIRES_FRACTION}}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The periodic tasks, every one with `expires` below its interval."""
    schedule = {"llmpool-discovery": _entry("llmpool.control.discover", discovery_every(settings)),
                "llmpool-redis-memory": _entry("llmpool.control.redis_memory", REDIS_MEMORY_EVERY)}
    if settings.agent_health_check_enabled:
        schedule["llmpool-health"] = _entry("llmpool.control.health_check",
                                            settings.agent_health_check_interval)
    if settings.agent_load_interval > 0:
        schedule["llmpool-load"] = _entry("llmpool.control.load", settings.agent_load_interval)
    return schedule
