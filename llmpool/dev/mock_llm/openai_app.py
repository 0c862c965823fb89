"""The OpenAI-compatible Starlette app one mock container serves."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from llmpool.dev.mock_llm import dialects, faults, flavors
from llmpool.dev.mock_llm.replies import (
    InvalidRequest,
    completion,
    error_body,
    parse_chat_request,
    plan_reply,
)
from llmpool.dev.mock_llm.state import MockError, deploy_id
from llmpool.dev.mock_llm.streaming import Timing, stream_body

if TYPE_CHECKING:
    from llmpool.dev.mock_llm.container import Container

__all__ = ["build_app"]

log = logging.getLogger("llmpool.dev.mock_llm")
CHAT_PATH = "/v1/chat/completions"
OLLAMA_VERSION = "0.5.0"


def build_app(container: Container) -> ASGIApp:
    """The ASGI app of `container`: chat, models, health (or Ollama's routes), its /_mock/ routes."""
    faults.install_log_filter()
    routes = [
        Route(CHAT_PATH, _endpoint(container, chat), methods=["POST"]),
        Route("/v1/models", _endpoint(container, models), methods=["GET"]),
        Route("/_mock/config", _endpoint(container, config), methods=["GET", "POST"]),
        Route("/_mock/stats", _endpoint(container, stats), methods=["GET"]),
    ]
    if container.spec.flavor == "ollama":
        routes += [
            Route("/api/tags", _endpoint(container, ollama_tags), methods=["GET"]),
            Route("/api/version", _endpoint(container, ollama_version), methods=["GET"]),
        ]
    else:
        routes.append(Route("/health", _endpoint(container, health), methods=["GET"]))
    routes += flavors.flavor_routes(container)
    return StatsMiddleware(flavors.wrap(Starlette(routes=routes), container), container)


def _endpoint(container: Container, handler: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        return await handler(container, request)  # type: ignore[no-any-return]

    endpoint.__name__ = handler.__name__
    return endpoint


class StatsMiddleware:
    """Checks the bearer on /v1/* (like vLLM) and records every non-/_mock/ request."""

    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app = app
        self.container = container

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_mock/"):
            await self.app(scope, receive, send)
            return
        stats, started, status = self.container.stats, time.time(), 499
        note: dict[str, Any] = {}
        scope["mock.note"] = note  # the chat handler writes the model here

        async def send_and_see(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        is_chat = path == CHAT_PATH and scope["method"] == "POST"
        if is_chat:
            stats.enter_chat()
        try:
            await self._call(scope, receive, send_and_see)
        finally:
            if is_chat:
                stats.leave_chat()
            stats.record(method=scope["method"], path=path, status=status,
                         model=note.get("model"), started=started)
            log.info("%s %s %s -> %d (%.3fs)", self.container.name, scope["method"], path,
                     status, time.time() - started)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.container.spec.token
        if not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"authorization")
        self.container.stats.last_authorization = given.decode("latin-1") if given else None
        if token is not None and given != f"Bearer {token}".encode():
            body = error_body("Unauthorized", "AuthenticationError", 401)
            await JSONResponse(body, 401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def chat(container: Container, request: Request) -> Response:
    """POST /v1/chat/completions: validate, play the fault if any, else answer."""
    raw = await request.body()
    as_fault = container.knobs.fault == "validation_500"  # any flavour; llama-cpp-python's own always
    if (as_fault or container.spec.flavor == "llama-cpp-python") and (problem := dialects.malformed_body(raw)):
        container.stats.last_body = raw.decode(errors="replace")
        if as_fault:
            container.take_fault("chat")
        return dialects.traceback_500(problem)
    try:
        chat_request = parse_chat_request(raw)
    except InvalidRequest as exc:
        container.stats.last_body = raw.decode(errors="replace")
        return JSONResponse(error_body(str(exc), "BadRequestError", 400), 400)
    container.stats.last_body = chat_request.body
    request.scope["mock.note"]["model"] = chat_request.model
    knobs = container.knobs  # one snapshot, so a config change mid-answer does not mix
    if not knobs.send_usage or (chat_request.stream and container.spec.flavor == "llama-cpp-python"):
        chat_request = dialects.without_usage(chat_request)  # that server's streams never carry usage
    if knobs.interrupt_requests:
        dialects.interrupt_running(container)
    reply = plan_reply(chat_request, container=container.name, reply=knobs.reply, tool_script=knobs.tool_script)
    fault = container.take_fault("chat") if knobs.fault != "validation_500" else None  # well formed: answered
    if fault:
        return await faults.chat_fault(fault, container, request, chat_request, reply)
    timing = Timing(knobs.ttft, knobs.tokens_per_second, released=container.released)
    if chat_request.stream:
        parts = stream_body(chat_request, reply, timing)
        if knobs.interrupt_requests:
            parts = dialects.interruptible(container, parts)
        return StreamingResponse(parts, media_type="text/event-stream")
    await timing.wait(len(reply.tokens) - 1)
    answer = completion(reply, chat_request.model)
    if not knobs.send_usage:
        del answer["usage"]
    return JSONResponse(answer)


async def models(container: Container, request: Request) -> Response:
    """GET /v1/models: the one model this container serves."""
    spec = container.spec
    if spec.flavor == "ollama":  # Ollama names models by tag, e.g. llama3.2:3b
        entry: dict[str, Any] = {"id": spec.model_name, "object": "model", "created": 0,
                                 "owned_by": "library"}
    else:
        entry = {"id": spec.hf_model_id, "object": "model", "created": 0,
                 "owned_by": flavors.OWNED_BY.get(spec.flavor, "vllm"),
                 "root": spec.hf_model_id, "parent": None, "max_model_len": 4096}
    return JSONResponse({"object": "list", "data": [entry]})


async def ollama_tags(container: Container, request: Request) -> Response:
    """GET /api/tags (Ollama flavour): the one model this container serves, as Ollama lists it."""
    name = container.spec.model_name
    details = flavors.ollama_details(container)
    entry = {"name": name, "model": name, "modified_at": "2025-01-01T00:00:00Z",
             "size": 4920753328, "digest": deploy_id(name), "details": details}
    return JSONResponse({"models": [entry]})


async def ollama_version(container: Container, request: Request) -> Response:
    """GET /api/version (Ollama flavour): Ollama's liveness check, so health faults hit it."""
    body = {"version": OLLAMA_VERSION}
    fault = container.take_fault("health")
    if fault:
        return await faults.health_fault(fault, container, request, ok_body=body)
    return JSONResponse(body)


async def health(container: Container, request: Request) -> Response:
    """GET /health: 200 {"status": "ok"} unless a health fault (or llama.cpp loading) says otherwise."""
    loading = flavors.loading_health(container)
    if loading is not None:
        return loading
    fault = container.take_fault("health")
    if fault:
        return await faults.health_fault(fault, container, request)
    return JSONResponse({"status": "ok"})


async def config(container: Container, request: Request) -> Response:
    """GET/POST /_mock/config: this container's knobs and fault."""
    if request.method == "GET":
        return JSONResponse(container.knobs.to_dict())
    try:
        updates = await request.json()
        if not isinstance(updates, dict):
            raise ValueError("the config body must be a JSON object")
        new = container.knobs.merged(updates)  # checks everything before anything changes
    except (ValueError, MockError) as exc:
        return JSONResponse({"error": str(exc)}, 400)
    task = asyncio.create_task(container.configure(updates))
    if new.fault == "refuse":
        # Stopping this server waits for this very request; let it answer first.
        faults.keep(task)
        return JSONResponse(new.to_dict())
    return JSONResponse(await task)


async def stats(container: Container, request: Request) -> Response:
    """GET /_mock/stats: what this container has seen."""
    return JSONResponse(container.stats.to_dict())
