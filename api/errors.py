"""Exception handlers: every failure the shim can meet becomes a clear 4xx/5xx JSON, never a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from redis.exceptions import MaxConnectionsError

from api.openai_errors import is_openai_route, reshaped
from llmpool.errors import LLMPoolError, Overloaded, RedisFull
from llmpool.status_codes import http_status_for

__all__ = ["install_error_handlers", "error_response"]

log = logging.getLogger(__name__)


def error_response(status: int, error: Mapping[str, object], **extra: object) -> JSONResponse:
    return JSONResponse({"status": "error", "error": error, "message": error.get("message"), **extra},
                        status_code=status)


def _location(loc: tuple[object, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


async def _invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    malformed = [e for e in exc.errors() if e.get("type") == "json_invalid"]
    if malformed:  # not JSON at all: 400, as opposed to JSON with invalid fields (422)
        where = malformed[0].get("ctx", {}).get("error", "invalid JSON")
        error = {"type": "malformed_json", "message": f"The body is not valid JSON: {where}"}
        return error_response(400, error)
    problems = [f"{_location(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
    error = {"type": "invalid_request", "message": "Invalid request: " + "; ".join(problems)}
    return error_response(422, error, detail=problems)


RETRY_AFTER = "1"  # seconds; a shortage of the API's own passes as its clients finish
POOL_SHORTAGE = ("The API is overloaded: all its Redis connections are in use (AGENT_API_REDIS_CONNECTIONS); "
                 "Redis itself is fine, retry later")


def _overloaded(error: Mapping[str, object]) -> JSONResponse:
    response = error_response(503, error)
    response.headers["Retry-After"] = RETRY_AFTER
    return response


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, MaxConnectionsError):  # our own pool is full: Redis was never asked
        log.warning("no free Redis connection in the API's pool: %s", exc)
        return _overloaded(Overloaded(POOL_SHORTAGE).to_dict())
    if isinstance(exc, redis.exceptions.OutOfMemoryError):  # Redis answers, but is at its maxmemory
        log.warning("Redis refused a write (maxmemory): %s", exc)
        return error_response(503, RedisFull("Redis is full (maxmemory reached): try again later").to_dict())
    log.error("Redis unavailable: %s", exc)
    error = {"type": "redis_unavailable", "message": "The job store (Redis) is unavailable"}
    return error_response(503, error)


async def _llmpool_error(request: Request, exc: LLMPoolError) -> JSONResponse:
    if isinstance(exc, Overloaded):
        return _overloaded(exc.to_dict())
    return error_response(http_status_for(exc.code), exc.to_dict())


Handler = Callable[[Request, Any], Awaitable[JSONResponse]]


def _openai_shaped(handler: Handler) -> Handler:
    """The same answer, in OpenAI's error shape on the `/v1` routes (the `openai` package reads it)."""

    async def handle(request: Request, exc: Any) -> JSONResponse:
        response = await handler(request, exc)
        if not is_openai_route(request.url.path):
            return response
        if isinstance(exc, RequestValidationError):
            first = exc.errors()[0] if exc.errors() else {}
            malformed = first.get("type") == "json_invalid"
            return reshaped(response, status=400 if malformed else 422, param=_location(tuple(first.get("loc", ()))))
        return reshaped(response)

    return handle


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _openai_shaped(_invalid_body))
    app.add_exception_handler(redis.RedisError, _openai_shaped(_redis_down))
    app.add_exception_handler(OperationalError, _openai_shaped(_redis_down))
    app.add_exception_handler(LLMPoolError, _openai_shaped(_llmpool_error))
