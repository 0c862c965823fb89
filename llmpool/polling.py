"""When a discovery pass is due: the TT-Studio agent's LLM polling, made explicit. Pure.

With an LLM selected, discovery runs every AGENT_DISCOVERY_INTERVAL. With none, it runs every
AGENT_LLM_POLLING_INTERVAL or more often (whichever interval is shorter), and gives up after
AGENT_LLM_POLLING_MAX_ATTEMPTS passes that found nothing (0 = never) until a forced refresh.
"""

from __future__ import annotations

from llmpool.settings import Settings

__all__ = ["discovery_every", "discovery_due", "SLACK"]

SLACK = 0.9  # beat fires a little early or late; a pass 10% early still counts as due


def discovery_every(settings: Settings) -> float:
    """How often beat fires the discovery task (each run then decides if it is due)."""
    if settings.agent_llm_polling_enabled:
        return min(settings.agent_discovery_interval, settings.agent_llm_polling_interval)
    return settings.agent_discovery_interval


def discovery_due(
    settings: Settings, *, now: float, last_run: float | None, has_llm: bool, empty_passes: int,
    force: bool = False,
) -> tuple[bool, str]:
    """Whether to run a discovery pass now, and why (for the task's result and logs)."""
    if force:
        return True, "forced"
    if last_run is None:
        return True, "first pass"
    elapsed = now - last_run
    if has_llm or not settings.agent_llm_polling_enabled:
        if elapsed >= settings.agent_discovery_interval * SLACK:
            return True, "interval"
        return False, "ran recently"
    limit = settings.agent_llm_polling_max_attempts
    if limit and empty_passes >= limit:
        return False, f"LLM polling gave up after {empty_passes} attempts (POST /refresh retries)"
    if elapsed >= discovery_every(settings) * SLACK:
        return True, "polling for an LLM"
    return False, "polled recently"
