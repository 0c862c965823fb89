"""What every discovery source returns, and the one guarded GET they all read with."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from llmpool.endpoints import Endpoint
from llmpool.errors import LLMPoolError
from llmpool.http_deadline import call_deadline

__all__ = [
    "MAX_BODY", "SourceFailed", "SourceResult", "get_json", "read_server", "with_scheme",
]

log = logging.getLogger("llmpool.discovery")

# A deployed-models listing is a few KB per container; anything this big is not one.
MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True)
class SourceResult:
    """One source's answer: its endpoints, or ok=False and why (the registry then keeps the last)."""

    source: str  # "backend", "static", "openai:<base url>", "ollama:<base url>"
    ok: bool
    endpoints: list[Endpoint]
    error: str | None = None  # short and secret-free, set when not ok


class SourceFailed(LLMPoolError):
    """A source could not be read; never leaves the discovery package (it becomes ok=False)."""

    code = "discovery_source_failed"


def get_json(http: httpx.Client, url: str, *, timeout: float) -> tuple[Any, bytes]:
    """GET `url` and return its JSON and raw body, or SourceFailed with a short reason.

    `timeout` bounds the whole read (a wall-clock deadline), however slowly the answer trickles.
    """
    try:
        with (call_deadline(timeout),
              http.stream("GET", url, timeout=timeout, headers={"Accept": "application/json"}) as resp):
            if resp.status_code != 200:
                raise SourceFailed(f"HTTP {resp.status_code}")
            raw = _read_bounded(resp)
    except httpx.PoolTimeout:
        # Ours, not the source's; the registry keeps the source's endpoints as for any failed read.
        raise SourceFailed("no free connection in the probe pool") from None
    except httpx.TimeoutException:
        raise SourceFailed(f"no answer within {timeout:g}s") from None
    except httpx.ConnectError:
        raise SourceFailed("cannot connect") from None
    except httpx.HTTPError as exc:
        # The type name only: an httpx message can quote the URL, and URLs may carry userinfo.
        raise SourceFailed(f"request failed ({type(exc).__name__})") from None
    try:
        return json.loads(raw), raw
    except ValueError:
        raise SourceFailed("invalid JSON") from None


def _read_bounded(response: httpx.Response) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > MAX_BODY:
            raise SourceFailed(f"answer larger than {MAX_BODY} bytes")
    return bytes(data)


def with_scheme(address: str) -> str:
    """`address` with http:// in front unless it already has a scheme (the backend omits it)."""
    if address.lower().startswith(("http://", "https://")):
        return address
    return "http://" + address


def read_server(source: str, url: str, parse: Callable[[Any], list[Endpoint]], *,
                http: httpx.Client, timeout: float) -> SourceResult:
    """GET one server's model list and parse it into endpoints, failures logged and returned."""
    try:
        data, _ = get_json(http, url, timeout=timeout)
        endpoints = parse(data)
    except SourceFailed as exc:
        log.warning("discovery: %s unreadable: %s", source, exc.message)
        return SourceResult(source, False, [], exc.message)
    return SourceResult(source, True, endpoints)
