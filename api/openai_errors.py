"""Errors of the `/v1` routes in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

The official `openai` package reads `error.message` and `error.code` from this body and picks its
exception class by the status code alone, so the status must match what happened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from fastapi.responses import JSONResponse

__all__ = ["OPENAI_PREFIX", "openai_error", "openai_type", "reshaped", "is_openai_route"]

OPENAI_PREFIX = "/v1/"


def is_openai_route(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX)


def openai_type(status: int) -> str:
    """OpenAI's error `type` for a status code."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_error(status: int, message: str, *, code: str | None, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": openai_type(status), "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def reshaped(response: JSONResponse, *, status: int | None = None, param: str | None = None) -> JSONResponse:
    """One of the shim's error answers ({"error": {"type", "message", ...}}) in OpenAI's shape."""
    body = json.loads(bytes(response.body))
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {"message": str(body.get("detail", "error"))}
    headers = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "www-authenticate")}
    return openai_error(status or response.status_code, str(error.get("message") or "error"),
                        code=error.get("type") or error.get("code"),
                        param=param or error.get("param"), headers=headers)
