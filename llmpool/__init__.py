"""llmpool: a Celery + Redis worker pool that runs chat jobs against LLM endpoints."""

__version__ = "0.1.0"
