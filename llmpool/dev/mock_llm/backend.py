"""The control server: a TT-Studio backend's GET /models/deployed/ plus the /_mock/ control API."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmpool.dev.mock_llm.container import Container
from llmpool.dev.mock_llm.faults import NoResponse, client_left
from llmpool.dev.mock_llm.fleet import Fleet
from llmpool.dev.mock_llm.state import BadConfig, Conflict, ContainerSpec, MockError, UnknownContainer, deploy_id

__all__ = ["build_backend_app", "deployed_entry"]

Handler = Callable[[Fleet, Request], Awaitable[Any]]
BACKEND_HANG_CAP = 3600.0


def deployed_entry(container: Container) -> dict[str, Any]:
    """One container as the real backend lists it (docker_utils serialize_canonical_entry_for_http)."""
    spec, port, did = container.spec, container.port, deploy_id(container.name)
    address = f"{container.advertise}:{port}"  # no scheme, exactly like the real backend
    return {
        "name": spec.name, "status": spec.status, "health": spec.health,
        "create": "2025-01-01T00:00:00Z", "image_id": f"sha256:{did}",
        "image_name": "ghcr.io/tenstorrent/tt-inference-server/mock:0.18.0",
        "port_bindings": {"7000/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]},
        "networks": {"tt_studio_network": {"DNSNames": [spec.name, did[:12]]}},
        "device_id": 0, "device_ids": [0],
        "model_id": f"id_tt-metal-{spec.model_name}-v0.18.0", "weights_id": None,
        "model_impl": {
            "model_name": spec.model_name, "hf_model_id": spec.hf_model_id,
            "model_type": spec.model_type, "service_route": "/v1/chat/completions",
            "health_route": "/health", "service_port": port, "setup_type": 3,
            "device_configurations": ["N150", "N300", "T3K"],
            "image_name": "ghcr.io/tenstorrent/tt-inference-server/mock", "image_tag": "0.18.0",
            "impl_id": "tt-metal", "version": "0.18.0", "shm_size": "32G", "env_file": "",
            "display_model_type": "LLM" if spec.model_type == "chat" else spec.model_type.upper(),
            "inference_engine": "vLLM", "param_count": 8,
        },
        "internal_url": f"{address}/v1/chat/completions", "health_url": f"{address}/health",
        "deployed_at": "2025-01-01T00:00:00Z", "stopped_by_user": False,
        "tool_calling_enabled": spec.tool_calling_enabled, "coding_agent_eligible": True,
        "model_type": spec.model_type,
    }


async def deployed(fleet: Fleet, request: Request) -> Response:
    """GET /models/deployed/: every non-Ollama container, keyed by deploy id, unless a fault."""
    fault = fleet.backend_fault
    if fault == "error500":
        return JSONResponse({"status": "error", "message": "mock backend fault"}, 500)
    if fault == "bad_json":
        return Response('{"0123": {"name": ', 200, media_type="application/json")
    if fault == "hang":
        if await client_left(request, fleet.closing, BACKEND_HANG_CAP):
            return NoResponse()
        return JSONResponse({"status": "error", "message": "mock backend hang ended"}, 504)
    listed = (c for c in fleet.containers.values() if c.spec.flavor != "ollama")
    return JSONResponse({deploy_id(c.name): deployed_entry(c) for c in listed})


async def list_containers(fleet: Fleet, request: Request) -> Any:
    """GET lists every container; POST adds one from a ContainerSpec JSON object."""
    if request.method == "GET":
        return {"containers": fleet.describe()}
    spec = ContainerSpec.from_dict(await _json(request))
    return (await fleet.add(spec)).describe()


async def one_container(fleet: Fleet, request: Request) -> Any:
    """GET describes a container; DELETE stops and de-lists it."""
    name = request.path_params["name"]
    if request.method == "GET":
        return fleet.get(name).describe()
    await fleet.remove(name)
    return {"removed": name}


async def container_config(fleet: Fleet, request: Request) -> Any:
    """GET shows a container's knobs; POST changes some of them (fault included)."""
    container = fleet.get(request.path_params["name"])
    if request.method == "GET":
        return container.knobs.to_dict()
    return await container.configure(await _json(request))


async def container_stats(fleet: Fleet, request: Request) -> Any:
    """GET /_mock/containers/{name}/stats."""
    return fleet.get(request.path_params["name"]).stats.to_dict()


async def container_reset(fleet: Fleet, request: Request) -> Any:
    """POST /_mock/containers/{name}/reset: clear the stats."""
    container = fleet.get(request.path_params["name"])
    container.stats.reset()
    return container.stats.to_dict()


async def container_release(fleet: Fleet, request: Request) -> Any:
    """POST /_mock/containers/{name}/release: answers waiting for a token get it now."""
    return fleet.get(request.path_params["name"]).release()


async def backend(fleet: Fleet, request: Request) -> Any:
    """GET shows, POST {"fault": ...} sets the fault of /models/deployed/."""
    if request.method == "GET":
        return {"fault": fleet.backend_fault}
    body = await _json(request)
    if set(body) != {"fault"}:
        raise BadConfig('the body must be {"fault": "<none|error500|bad_json|hang>"}')
    return fleet.set_backend_fault(body["fault"])


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadConfig(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadConfig("the body must be a JSON object")
    return body


_STATUS = ((UnknownContainer, 404), (BadConfig, 400), (Conflict, 409))


def _control(fleet: Fleet, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a control handler: its result as JSON, its MockError as a 4xx with the reason."""

    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await handler(fleet, request))
        except MockError as exc:
            status = next(code for kind, code in (*_STATUS, (MockError, 400)) if isinstance(exc, kind))
            return JSONResponse({"error": str(exc)}, status)

    return endpoint


def build_backend_app(fleet: Fleet) -> Starlette:
    """The control server's app for `fleet`."""

    async def deployed_endpoint(request: Request) -> Response:
        return await deployed(fleet, request)

    both = ["GET", "POST"]
    routes = [
        Route("/models/deployed/", deployed_endpoint, methods=["GET"]),
        Route("/_mock/containers", _control(fleet, list_containers), methods=both),
        Route("/_mock/containers/{name}", _control(fleet, one_container), methods=["GET", "DELETE"]),
        Route("/_mock/containers/{name}/config", _control(fleet, container_config), methods=both),
        Route("/_mock/containers/{name}/stats", _control(fleet, container_stats), methods=["GET"]),
        Route("/_mock/containers/{name}/reset", _control(fleet, container_reset), methods=["POST"]),
        Route("/_mock/containers/{name}/release", _control(fleet, container_release), methods=["POST"]),
        Route("/_mock/backend", _control(fleet, backend), methods=both),
    ]
    return Starlette(routes=routes)
