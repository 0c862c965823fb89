"""A Celery Request that keeps message text out of Flower's events, whoever published the job."""

from __future__ import annotations

from typing import Any

from celery.worker.request import Request

from llmpool.redaction import job_repr

__all__ = ["ChatRequest", "HIDDEN_RESULT"]

HIDDEN_RESULT = "<chat result hidden: GET /jobs/{id}>"


class ChatRequest(Request):
    """Events for `llmpool.chat` carry summaries, never the messages or the answer."""

    @property
    def argsrepr(self) -> str:
        args = self._args if isinstance(self._args, list | tuple) else ()
        return repr(tuple(job_repr(a) for a in args))

    @property
    def kwargsrepr(self) -> str:
        kwargs = self._kwargs if isinstance(self._kwargs, dict) else {}
        return repr({k: job_repr(v) for k, v in kwargs.items()})

    def info(self, safe: bool = False) -> dict[str, Any]:
        """What `inspect active`/`reserved` answer (Flower's worker page): the summaries, safe or not."""
        return {**super().info(safe=safe), "args": self.argsrepr, "kwargs": self.kwargsrepr}

    def send_event(self, type: str, **fields: Any) -> None:
        if type == "task-succeeded":
            fields["result"] = HIDDEN_RESULT.replace("{id}", str(self.id))
        super().send_event(type, **fields)
