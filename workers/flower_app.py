"""The app Flower loads: `celery -A workers.flower_app flower --port=5555`.

llmpool's Celery app, plus what Flower takes from llmpool's settings. Celery imports this module
before the flower command reads its FLOWER_* environment variables, so setting them here is
setting Flower's options:
- basic auth from AGENT_FLOWER_BASIC_AUTH, as FLOWER_BASIC_AUTH in this process's environment
  (never on a command line, where `ps` shows it). It opens Flower's UI and REST API to those
  credentials only; without it the UI is open and the REST API answers 401 (Flower 2's default).
  Flower's /metrics and /healthcheck answer everyone either way: keep its port off public networks.
- offline workers purged from its list PURGE_OFFLINE_AFTER seconds after their last heartbeat.
- llmpool's log format (tornado adds no handler of its own once the root logger has ours).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from llmpool.logs import configure_logging
from llmpool.settings import Settings, settings_or_exit
from workers.celery_app import app

__all__ = ["app", "flower_environment", "PURGE_OFFLINE_AFTER"]

PURGE_OFFLINE_AFTER = 60  # seconds; a worker restarted under another name leaves no ghost behind


def flower_environment(settings: Settings, environ: MutableMapping[str, str]) -> None:
    """Put llmpool's Flower settings where Flower's command reads them; an operator's own
    FLOWER_PURGE_OFFLINE_WORKERS wins, AGENT_FLOWER_BASIC_AUTH wins over a FLOWER_BASIC_AUTH."""
    if settings.agent_flower_basic_auth is not None:
        environ["FLOWER_BASIC_AUTH"] = settings.agent_flower_basic_auth.get_secret_value()
    environ.setdefault("FLOWER_PURGE_OFFLINE_WORKERS", str(PURGE_OFFLINE_AFTER))


_settings = settings_or_exit()
flower_environment(_settings, os.environ)
configure_logging(_settings, service="flower")
