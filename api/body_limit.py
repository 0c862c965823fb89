"""Refuses request bodies over AGENT_API_MAX_BODY_BYTES with 413, before anything parses them.

A declared Content-Length over the limit is refused at once; a body sent without one (chunked) is
counted as it arrives and refused as soon as it passes the limit, so no route ever holds more.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmpool.settings import Settings, get_settings

__all__ = ["BodyLimit", "BodyTooLarge", "install_body_limit"]


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes the limit. An HTTPException, because FastAPI turns
    any other exception met while reading a body into a 400; `install_body_limit` renders it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes (AGENT_API_MAX_BODY_BYTES)")
        self.limit = limit


def _too_large(path: str, limit: int) -> JSONResponse:
    message = f"The request body is larger than {limit} bytes (AGENT_API_MAX_BODY_BYTES)"
    if path.startswith("/v1/"):  # OpenAI's error shape for the OpenAI-compatible routes
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                       "code": "body_too_large"}}, status_code=413)
    return JSONResponse({"status": "error", "error": {"type": "body_too_large", "message": message},
                         "message": message}, status_code=413)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server (h11/httptools) refuses such a request itself
    return None


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _limit(scope: Scope) -> int:
        state = getattr(scope["app"].state, "llmpool", None)
        settings: Settings = state.settings if state is not None else get_settings()
        return settings.agent_api_max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _too_large(scope["path"], limit)(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:  # a route that read the body itself, outside FastAPI's handlers
            if started:  # a route that answered before reading its whole body: nothing more to say
                return
            await _too_large(scope["path"], limit)(scope, receive, send)


async def _render(request: Request, exc: Exception) -> Response:
    limit = exc.limit if isinstance(exc, BodyTooLarge) else 0
    return _too_large(request.url.path, limit)


def install_body_limit(app: FastAPI) -> None:
    app.add_middleware(BodyLimit)
    app.add_exception_handler(BodyTooLarge, _render)
