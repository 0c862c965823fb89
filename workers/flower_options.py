"""What Flower takes from llmpool's settings, as the FLOWER_* variables its command reads.

Basic auth from AGENT_FLOWER_BASIC_AUTH goes in as FLOWER_BASIC_AUTH, in the environment of the
Flower process itself (never on a command line, where `ps` shows it). It opens Flower's UI and REST
API to those credentials only; without it the UI is open and the REST API answers 401 (Flower 2's
default). Flower's /metrics and /healthcheck answer everyone either way: keep its port off public
networks. Offline workers leave Flower's list PURGE_OFFLINE_AFTER seconds after their last heartbeat.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from llmpool.settings import Settings

__all__ = ["flower_environment", "PURGE_OFFLINE_AFTER"]

PURGE_OFFLINE_AFTER = 60  # seconds; a worker restarted under another name leaves no ghost behind


def flower_environment(settings: Settings, environ: MutableMapping[str, str]) -> None:
    """Put llmpool's Flower settings where Flower's command reads them; an operator's own
    FLOWER_PURGE_OFFLINE_WORKERS wins, AGENT_FLOWER_BASIC_AUTH wins over a FLOWER_BASIC_AUTH."""
    if settings.agent_flower_basic_auth is not None:
        environ["FLOWER_BASIC_AUTH"] = settings.agent_flower_basic_auth.get_secret_value()
    environ.setdefault("FLOWER_PURGE_OFFLINE_WORKERS", str(PURGE_OFFLINE_AFTER))
