"""What each server kind adds to a mock container (ContainerSpec.flavor), as the real one answers it.

- `llamacpp` (llama.cpp's C++ server): /v1/models `owned_by: "llamacpp"`; while the `loading`
  knob is on, every route answers 503 {"error": {"code": 503, "message": "Loading model"}};
  /props gives `total_slots` (the `slots` knob) and /slots one entry per slot with
  `is_processing`; chat requests beyond the slots wait for one, as the real server queues them.
- `vllm`, and the default `openai` (its /v1/models says `owned_by: "vllm"`): /metrics in
  Prometheus text: `vllm:num_requests_running` (chat requests in flight plus the
  `external_running` knob: other clients), `vllm:num_requests_waiting` (`external_waiting`) and
  `vllm:gpu_cache_usage_perc`; `vllm:generation_tokens_total` counts one per chat request.
- `lmstudio`: /v1/models `owned_by: "organization_owner"`; /api/v0/models and
  /api/v0/models/{id} with `state` "not-loaded" while `loading` is on, else "loaded".
- `llama-cpp-python`: /v1/models `owned_by: "me"`; a stream carries no usage whatever
  `stream_options` asks, a whole answer does (unless `send_usage` is off: no usage anywhere);
  a request its request model refuses gets its 500 (dialects.malformed_body), as under the
  `validation_500` fault; its other knobs and faults: dialects.py.
- `ollama` (beside its /api/tags and /api/version in openai_app): /api/ps lists the model as
  loaded unless `loading` is on; /api/tags gives the spec's quantization and parameter size.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from llmpool.dev.mock_llm.container import Container

__all__ = ["OWNED_BY", "flavor_routes", "loading_health", "wrap", "ollama_details"]

OWNED_BY = {"llamacpp": "llamacpp", "lmstudio": "organization_owner", "ollama": "library", "llama-cpp-python": "me"}
CHAT_PATH = "/v1/chat/completions"
LOADING = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
KV_PER_REQUEST = 0.05  # the mock's KV-cache use per request in flight (a full cache at 20)


class Slots:
    """llama.cpp's parallel slots: requests past them wait, first come first served. A freed slot
    passes straight to the next waiter, so /slots never shows a slot idle while one waits."""

    def __init__(self) -> None:
        self.busy = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def take(self, container: Container) -> None:
        if self.busy < max(1, container.knobs.slots) and not self._waiting:
            self.busy += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.give()  # handed a slot just as it gave up: pass it on
            else:
                self._waiting.remove(turn)
            raise

    def give(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot stays busy, now for this waiter
                return
        self.busy -= 1


_SLOTS: weakref.WeakKeyDictionary[Container, Slots] = weakref.WeakKeyDictionary()


def _slots(container: Container) -> Slots:
    return _SLOTS.setdefault(container, Slots())


def flavor_routes(container: Container) -> list[Route]:
    """The routes `container`'s flavour adds to the OpenAI-compatible ones."""
    flavor = container.spec.flavor

    def route(path: str, handler: Any) -> Route:
        async def endpoint(request: Request) -> Response:
            return await handler(container, request)  # type: ignore[no-any-return]
        endpoint.__name__ = handler.__name__
        return Route(path, endpoint, methods=["GET"])

    if flavor == "llamacpp":
        return [route("/props", llamacpp_props), route("/slots", llamacpp_slots)]
    if flavor in ("vllm", "openai"):  # the default flavour answers as vLLM does (owned_by "vllm")
        return [route("/metrics", vllm_metrics)]
    if flavor == "lmstudio":
        return [route("/api/v0/models", lmstudio_models), route("/api/v0/models/{model:path}", lmstudio_model)]
    if flavor == "ollama":
        return [route("/api/ps", ollama_ps)]
    return []


def wrap(app: ASGIApp, container: Container) -> ASGIApp:
    """`app` behind the flavour's request handling: llama.cpp's loading 503s and slot queue."""
    return LlamaCppGate(app, container) if container.spec.flavor == "llamacpp" else app


class LlamaCppGate:
    """503 "Loading model" on every route while loading; a chat request waits for a free slot."""

    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app = app
        self.container = container

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_mock/") or path == "/health":
            await self.app(scope, receive, send)  # /health answers the 503 itself (health_status)
            return
        if self.container.knobs.loading:
            await JSONResponse(LOADING, 503)(scope, receive, send)
            return
        if path != CHAT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        slots = _slots(self.container)
        await slots.take(self.container)
        try:
            await self.app(scope, receive, send)
        finally:
            slots.give()


def loading_health(container: Container) -> Response | None:
    """llama.cpp's /health while it loads its model, or None when it is not one loading."""
    if container.spec.flavor == "llamacpp" and container.knobs.loading:
        return JSONResponse(LOADING, 503)
    return None


async def llamacpp_props(container: Container, request: Request) -> Response:
    spec = container.spec
    return JSONResponse({"total_slots": max(1, container.knobs.slots), "model_path": spec.hf_model_id,
                         "default_generation_settings": {"n_ctx": 4096}, "build_info": "mock"})


async def llamacpp_slots(container: Container, request: Request) -> Response:
    busy = _slots(container).busy
    return JSONResponse([{"id": n, "n_ctx": 4096, "is_processing": n < busy}
                         for n in range(max(1, container.knobs.slots))])


async def vllm_metrics(container: Container, request: Request) -> Response:
    knobs = container.knobs
    running = container.stats.in_flight + knobs.external_running
    cache = min(1.0, (running + knobs.external_waiting) * KV_PER_REQUEST)
    label = f'{{model_name="{container.spec.hf_model_id}"}}'
    lines = [
        "# HELP vllm:num_requests_running Number of requests currently running on GPU.",
        "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{label} {float(running)}",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{label} {float(knobs.external_waiting)}",
        "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:gpu_cache_usage_perc gauge", f"vllm:gpu_cache_usage_perc{label} {cache}",
        # The mock counts one token per chat request it has taken: a counter that moves with work.
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{label} {float(container.stats.chat_requests)}",
    ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def _lmstudio_entry(container: Container) -> dict[str, Any]:
    spec = container.spec
    return {"id": spec.hf_model_id, "object": "model", "type": "llm", "publisher": "lmstudio-community",
            "arch": "llama", "compatibility_type": "gguf", "quantization": spec.quantization,
            "state": "not-loaded" if container.knobs.loading else "loaded", "max_context_length": 4096}


async def lmstudio_models(container: Container, request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [_lmstudio_entry(container)]})


async def lmstudio_model(container: Container, request: Request) -> Response:
    if request.path_params["model"] != container.spec.hf_model_id:
        return JSONResponse({"error": f"Model {request.path_params['model']!r} not found"}, 404)
    return JSONResponse(_lmstudio_entry(container))


def ollama_details(container: Container) -> dict[str, Any]:
    """The `details` Ollama gives a model in /api/tags and /api/ps."""
    spec = container.spec
    return {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
            "parameter_size": spec.parameter_size, "quantization_level": spec.quantization}


async def ollama_ps(container: Container, request: Request) -> Response:
    name = container.spec.model_name
    loaded = [] if container.knobs.loading else [{
        "name": name, "model": name, "size": 5_137_025_024, "digest": "0" * 64,
        "details": ollama_details(container), "expires_at": "2099-01-01T00:00:00Z", "size_vram": 5_137_025_024}]
    return JSONResponse({"models": loaded})
