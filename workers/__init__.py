"""The Celery app, its configuration and the chat task."""

from workers.celery_app import app

__all__ = ["app"]
