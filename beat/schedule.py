"""What beat schedules. Discovery and health checks arrive with the registry (issue 3)."""

from __future__ import annotations

from typing import Any

from llmpool.settings import Settings

__all__ = ["beat_schedule"]


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The periodic tasks, every one on the `control` queue with `expires` below its interval."""
    return {}
