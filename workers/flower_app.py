"""The app Flower loads: `celery -A workers.flower_app flower --port=5555`.

llmpool's Celery app, plus Flower's options from llmpool's settings (workers/flower_options.py) and
llmpool's log format (tornado adds no handler of its own once the root logger has ours). Celery
imports this module before the flower command reads its FLOWER_* variables, so setting them here
sets Flower's options. Importing it configures this process: only Flower loads it.
"""

from __future__ import annotations

import os

from llmpool.logs import configure_logging
from llmpool.settings import settings_or_exit
from workers.celery_app import app
from workers.flower_options import flower_environment

__all__ = ["app"]

_settings = settings_or_exit()
flower_environment(_settings, os.environ)
configure_logging(_settings, service="flower")
