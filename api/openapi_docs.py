"""What the OpenAPI schema says beyond FastAPI's defaults: the shim's error bodies, streamed answers.

FastAPI documents every 422 as its own `HTTPValidationError` ({"detail": [{loc, msg, type}]}); the
shim answers in its error JSON ({"status": "error", "error": {type, message}, ...}) and, under /v1,
in OpenAI's ({"error": {message, type, param, code}}). Both have an `error` object, which is what
the schema now promises, so a client generated from it (or schemathesis) reads the real answers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

__all__ = ["document_errors", "ERROR_SCHEMA", "CHAT_ANSWERS", "EVENT_STREAM"]

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_EVENTS = {"text/event-stream": {"schema": {"type": "object"}}}  # each event's data: a JSON object
# Route `responses=`: /poll_requests answers text (the default), JSON or SSE, by its Accept header.
CHAT_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "the answer: streamed text, then [STATS] (default); one JSON object (Accept: "
                         "application/json); or Server-Sent Events (Accept: text/event-stream)",
          "content": {"application/json": {"schema": {"type": "object"}}, **_TEXT, **_EVENTS}}}
EVENT_STREAM: dict[int | str, dict[str, Any]] = {200: {"description": "Server-Sent Events", "content": _EVENTS}}

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "status": {"type": "string", "enum": ["error"]},
        "message": {"type": ["string", "null"]},
        "error": {"type": "object", "description": "type and message (the shim), or OpenAI's message, type, "
                                                   "param and code (under /v1)"},
    },
}


def document_errors(app: FastAPI) -> None:
    """Make app.openapi() describe validation errors as the shim sends them."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in components:
                components["HTTPValidationError"] = dict(ERROR_SCHEMA)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]
