"""Small, bounded HTTP probes `llmpool up` uses to decide what to start and when it is ready."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from llmpool.settings import Settings

__all__ = [
    "http_status", "get_json", "bounded", "configured_llm", "api_probe", "flower_probe", "all_ready",
    "is_local_host", "connect_host",
]

T = TypeVar("T")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def http_status(url: str, *, timeout: float = 1.0) -> int | None:
    """The status code of `GET url`, or None when nothing answers in time."""
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def get_json(url: str, *, timeout: float = 1.0) -> Any:
    """The JSON body of a 200 answer to `GET url`, else None."""
    try:
        response = httpx.get(url, timeout=timeout)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def bounded(fn: Callable[[], T], *, timeout: float, default: T) -> T:
    """Run `fn` in a daemon thread and give up after `timeout`.

    httpx's timeouts do not cover the DNS lookup, and the default backend host
    (tt-studio-backend-api) does not resolve outside Docker: a resolver can stall for seconds.
    """
    result: list[T] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else default


def configured_llm(settings: Settings) -> str | None:
    """What LLM the stack will use without the mock, described for a human; None if nothing."""
    if settings.use_cloud_llm:
        return f"{settings.cloud_chat_ui_url} (cloud, model {settings.cloud_model_name})"
    if settings.llm_container_name:
        name = settings.llm_container_name
        return f"http://{name}:7000 (container {name})"
    local = f"http://{_url_host(settings.local_llm_host)}:{settings.local_llm_port}"
    if bounded(lambda: http_status(f"{local}/health"), timeout=1.5, default=None) == 200:
        return f"{local} (local host LLM, model {settings.local_model_name})"
    deployed_url = f"{settings.agent_backend_url}/models/deployed/"
    deployed = bounded(lambda: get_json(deployed_url), timeout=1.5, default=None)
    if isinstance(deployed, dict) and deployed:
        return f"{deployed_url} ({len(deployed)} deployed model(s) from the TT-Studio backend)"
    return None


def api_probe(base_url: str, *, workers: int = 1) -> Callable[[], str | None]:
    """Ready when `GET /status` answers JSON with at least `workers` live worker processes."""
    wanted = workers

    def probe() -> str | None:
        body = get_json(f"{base_url}/status")
        if not isinstance(body, dict):
            return "api: GET /status does not answer yet"
        workers = body.get("workers")
        if not isinstance(workers, int) or workers < wanted:
            return f"worker: API reports workers={workers!r}"
        return None

    return probe


def flower_probe(base_url: str) -> Callable[[], str | None]:
    """Ready when Flower's `GET /healthcheck` answers 200."""

    def probe() -> str | None:
        status = http_status(f"{base_url}/healthcheck")
        return None if status == 200 else f"flower: GET /healthcheck answered {status}"

    return probe


def all_ready(*probes: Callable[[], str | None]) -> Callable[[], str | None]:
    """One probe that is ready when all are, reporting every part that is not."""

    def probe() -> str | None:
        missing = [m for m in (p() for p in probes) if m is not None]
        return "; ".join(missing) or None

    return probe


def is_local_host(host: str | None) -> bool:
    return host in LOCAL_HOSTS


def connect_host(bind_host: str) -> str:
    """The address to reach a server bound to `bind_host` from this machine."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::") else _url_host(bind_host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
