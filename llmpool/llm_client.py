"""One chat call to one endpoint over a pooled httpx client, every failure translated.

The threads pool has no task time limits, so these timeouts are the only guard on a call:
connect, first token (the read timeout until output starts, and the longest silence after), and
the total (checked after every line, so it overshoots by at most one read timeout).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from llmpool.completion import Completion, parse_chunk, parse_completion, sse_payload
from llmpool.endpoints import Endpoint
from llmpool.errors import (
    BadRequest,
    ContextTooLong,
    EndpointRejected,
    EndpointTimeout,
    EndpointUnreachable,
    FirstTokenTimeout,
    LLMPoolError,
    RateLimited,
    RetryableError,
    ServerError,
    StreamCut,
)
from llmpool.llm_request import LLMRequest, build_request
from llmpool.schemas import ChatJob
from llmpool.settings import Settings

__all__ = ["LLMClient", "CallOutcome", "make_http_client", "status_error", "translate_http_error"]

MAX_ERROR_BODY = 64 * 1024
MAX_JSON_BODY = 16 * 1024 * 1024
CONTEXT_HINTS = ("context length", "context_length", "maximum context", "too many tokens",
                 "prompt is too long", "context window")
TokenSink = Callable[[str], None]


@dataclass
class CallOutcome:
    completion: Completion
    ttft: float | None
    total: float


def make_http_client(settings: Settings, *, max_connections: int | None = None) -> httpx.Client:
    """The per-process pooled client; sized to the worker's concurrency."""
    size = max_connections or max(settings.agent_worker_concurrency, 10)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    return httpx.Client(limits=limits, timeout=settings.agent_request_timeout, follow_redirects=False)


def _error_message(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict):
            inner = inner.get("message") or inner.get("detail") or inner
        return str(inner.get("message", inner) if isinstance(inner, dict) else inner)[:500]
    return text[:500]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; rare from LLM servers, and the breaker's wait covers it


def status_error(endpoint_id: str, status: int, body: bytes, retry_after: str | None) -> LLMPoolError:
    """The error for a non-2xx answer: the caller's fault for 400/413/422, else the endpoint's."""
    message = _error_message(body)
    where = f"{endpoint_id} answered HTTP {status}"
    if status in (400, 413, 422):
        lowered = message.lower()
        if status == 413 or any(hint in lowered for hint in CONTEXT_HINTS):
            return ContextTooLong(f"{where}: {message}", status=status, endpoint=endpoint_id)
        return BadRequest(f"{where}: {message}", status=status, endpoint=endpoint_id)
    details = {"status": status, "endpoint": endpoint_id}
    if status == 429:
        return RateLimited(f"{where}: {message}", retry_after=_retry_after(retry_after), **details)
    if status == 408:
        return EndpointTimeout(f"{where}: {message}", **details)
    if status >= 500:
        return ServerError(f"{where}: {message}", **details)
    return EndpointRejected(f"{where}: {message}", **details)


def translate_http_error(exc: httpx.HTTPError, endpoint_id: str, pieces: int) -> RetryableError:
    """httpx's exceptions mapped into the error tree; `pieces` > 0 means output was sent."""
    details = {"endpoint": endpoint_id, "tokens_sent": pieces}
    reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return EndpointUnreachable(f"cannot connect to {endpoint_id} ({reason})", **details)
    if isinstance(exc, httpx.ReadTimeout):
        if pieces == 0:
            return FirstTokenTimeout(f"{endpoint_id} sent no token in time", **details)
        return StreamCut(f"{endpoint_id} stalled mid-stream", **details)
    if isinstance(exc, httpx.TimeoutException):
        return EndpointTimeout(f"{endpoint_id} timed out ({reason})", **details)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.NetworkError):
        return StreamCut(f"{endpoint_id} closed the connection ({reason})", **details)
    return EndpointUnreachable(f"request to {endpoint_id} failed ({reason})", **details)


def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            break
    return bytes(data[:limit])


class LLMClient:
    """Makes chat calls; holds no state but the pooled httpx client and the settings."""

    def __init__(self, http: httpx.Client, settings: Settings) -> None:
        self.http = http
        self.settings = settings

    def _timeout(self, budget: float) -> httpx.Timeout:
        s = self.settings
        return httpx.Timeout(
            connect=min(s.agent_connect_timeout, budget), read=min(s.agent_first_token_timeout, budget),
            write=min(s.agent_connect_timeout, budget), pool=min(s.agent_connect_timeout, budget),
        )

    def chat(
        self, endpoint: Endpoint, job: ChatJob, *, stream: bool = True,
        budget: float | None = None, on_token: TokenSink | None = None,
    ) -> CallOutcome:
        """Run one completion on `endpoint` within `budget` seconds (default: the request timeout)."""
        total = min(budget or self.settings.agent_request_timeout, self.settings.agent_request_timeout)
        if total <= 0:
            raise EndpointTimeout("no time left for the call", endpoint=endpoint.id)
        request = build_request(endpoint, job, self.settings, stream=stream)
        started = time.monotonic()
        call = _Call(endpoint.id, started, started + total, on_token)
        try:
            with self.http.stream(
                "POST", request.url, json=request.body, headers=request.headers,
                timeout=self._timeout(total),
            ) as response:
                call.consume(response)
        except httpx.HTTPError as exc:
            raise translate_http_error(exc, endpoint.id, call.completion.pieces) from exc
        return CallOutcome(call.completion, call.ttft, time.monotonic() - started)

    def send(self, request: LLMRequest, timeout: float) -> httpx.Response:
        """A plain request (probes and connection tests), errors translated."""
        try:
            return self.http.post(request.url, json=request.body, headers=request.headers,
                                  timeout=timeout)
        except httpx.HTTPError as exc:
            raise translate_http_error(exc, request.url, 0) from exc


class _Call:
    """The reading side of one call: status check, then JSON or SSE, with the total deadline."""

    def __init__(self, endpoint_id: str, started: float, deadline: float,
                 on_token: TokenSink | None) -> None:
        self.endpoint_id = endpoint_id
        self.started = started
        self.deadline = deadline
        self.on_token = on_token
        self.completion = Completion()
        self.ttft: float | None = None

    def consume(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            body = _read_bounded(response, MAX_ERROR_BODY)
            raise status_error(self.endpoint_id, response.status_code, body,
                               response.headers.get("retry-after"))
        if "text/event-stream" in response.headers.get("content-type", ""):
            self._consume_sse(response.iter_lines())
        else:
            self.completion = parse_completion(
                _read_bounded(response, MAX_JSON_BODY).decode("utf-8", errors="replace"))
            self._mark_output(self.completion.content)

    def _consume_sse(self, lines: Iterator[str]) -> None:
        for line in lines:
            if time.monotonic() > self.deadline:
                raise EndpointTimeout(f"{self.endpoint_id} exceeded the request timeout",
                                      endpoint=self.endpoint_id,
                                      tokens_sent=self.completion.pieces)
            payload = sse_payload(line)
            if payload is None or payload == "":
                continue
            if payload == "[DONE]":
                return
            before = self.completion.pieces
            text = parse_chunk(self.completion, payload)
            if self.completion.pieces > before:
                self._mark_output(text)
        if self.completion.finish_reason is None:
            raise StreamCut(f"{self.endpoint_id} ended the stream before it finished",
                            endpoint=self.endpoint_id, tokens_sent=self.completion.pieces)

    def _mark_output(self, text: str) -> None:
        if self.ttft is None:
            self.ttft = time.monotonic() - self.started
        if text and self.on_token is not None:
            self.on_token(text)

