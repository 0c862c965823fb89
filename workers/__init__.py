"""The Celery app, its configuration and the chat task."""

from workers.celery_app import app

# Importing registers the task and the lifecycle hooks with the app.
from workers import chat_task, signals  # noqa: E402,F401  isort: skip
from beat import tasks as _control_tasks  # noqa: E402,F401  isort: skip

__all__ = ["app"]
