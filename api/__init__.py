"""The HTTP shim for clients that cannot talk Celery (FastAPI)."""
