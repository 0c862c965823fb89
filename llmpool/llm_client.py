"""One chat call to one endpoint over a pooled httpx client, every failure translated.

The threads pool has no task time limits, so these bounds are the only guard on a call:
connect, first token (the read timeout until output starts, and the longest silence after; a
caller may hold the first token to a shorter wait of its own, the endpoint's adaptive timeout
from llmpool.ttft, which ends the call as FirstTokenTimeout), the
total (a wall-clock deadline on every socket operation, llmpool.http_deadline: a server that
trickles or streams forever is cut at it, a few milliseconds late at most), and the size of the
answer (AGENT_MAX_RESPONSE_BYTES in all, AGENT_MAX_LINE_BYTES per SSE line; reading stops there).
Over a bound is the endpoint's failure (RequestTimeout, ResponseTooLarge, LineTooLong): the job
fails over. No free connection in our own pool is ours (NoFreeConnection): nothing is charged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import httpx

from llmpool.completion import Completion, parse_chunk, parse_completion, sse_payload
from llmpool.endpoints import Endpoint
from llmpool.error_text import short_error
from llmpool.errors import (
    BadRequest,
    CallCancelled,
    ContextTooLong,
    EndpointRejected,
    EndpointStarting,
    EndpointTimeout,
    EndpointUnreachable,
    FirstTokenTimeout,
    IncompleteAnswer,
    LLMPoolError,
    NoFreeConnection,
    RateLimited,
    RequestTimeout,
    ServerError,
    StreamCut,
)
from llmpool.http_deadline import CallCancel, CallDeadline, call_deadline, make_bounded_client
from llmpool.llm_request import LLMRequest, build_request
from llmpool.prober import starting_reason
from llmpool.schemas import ChatJob
from llmpool.settings import Settings
from llmpool.sse_lines import ByteBudget, LineSplitter
from llmpool.usage import truthful_usage

__all__ = ["LLMClient", "CallOutcome", "make_http_client", "make_probe_client", "status_error",
           "translate_http_error"]

MAX_ERROR_BODY = 64 * 1024
# Compressed answers would be capped only after inflating each chunk (up to ~1000x its size).
IDENTITY = {"Accept-Encoding": "identity"}
CONTEXT_HINTS = ("context length", "context_length", "maximum context", "too many tokens",
                 "prompt is too long", "context window")
TokenSink = Callable[[str], None]
FirstTokenSink = Callable[[float], None]  # told the TTFT, in seconds, when output starts


@dataclass
class CallOutcome:
    completion: Completion
    ttft: float | None
    total: float


def make_http_client(settings: Settings, *, max_connections: int | None = None) -> httpx.Client:
    """The per-process pooled client of chat calls; sized to the worker's concurrency."""
    size = max_connections or max(settings.agent_worker_concurrency, 10)
    return make_bounded_client(max_connections=size, timeout=settings.agent_request_timeout)


def make_probe_client(settings: Settings) -> httpx.Client:
    """The control plane's own client (health probes, discovery): chat calls never starve it."""
    return make_bounded_client(max_connections=settings.agent_probe_connections,
                               timeout=settings.agent_health_check_timeout)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; rare from LLM servers, and the breaker's wait covers it


def status_error(endpoint_id: str, status: int, body: bytes, retry_after: str | None) -> LLMPoolError:
    """The error for a non-2xx answer: the caller's fault for 400/413/422, else the endpoint's."""
    message = short_error(body)
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
    if status >= 500 and (why := starting_reason(status, body)):  # as the health pass reads it: starting
        return EndpointStarting(f"{where}: {why}", retry_after=_retry_after(retry_after), **details)
    if status >= 500:
        return ServerError(f"{where}: {message}", **details)
    return EndpointRejected(f"{where}: {message}", **details)


def translate_http_error(exc: httpx.HTTPError, endpoint_id: str, pieces: int) -> LLMPoolError:
    """httpx's exceptions mapped into the error tree; `pieces` > 0 means output was sent.

    A PoolTimeout never reached the endpoint: every connection of our own pool was busy.
    """
    details = {"endpoint": endpoint_id, "tokens_sent": pieces}
    reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if isinstance(exc, httpx.PoolTimeout):
        return NoFreeConnection(f"no free connection in this worker's HTTP pool for {endpoint_id}", **details)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        # refused: nothing listens there, a certainty the breaker acts on at once (llmpool.breaker)
        if _refused(exc):
            details["refused"] = True
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


def _refused(exc: BaseException) -> bool:
    """Whether the connection was refused (ECONNREFUSED): httpx wraps httpcore's error, which wraps the OSError."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain; bounded all the same
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of the body (an error page, say); the rest is never read."""
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk[: limit - len(data)]
        if len(data) >= limit:
            break
    return bytes(data)


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
        budget: float | None = None, on_token: TokenSink | None = None, cancel: CallCancel | None = None,
        first_token_timeout: float | None = None, on_first_token: FirstTokenSink | None = None,
    ) -> CallOutcome:
        """Run one completion on `endpoint` within `budget` seconds (default: the request timeout).

        `cancel`, when given, lets another thread end the call at once (CallCancelled).
        `first_token_timeout`, when shorter than the budget, ends a call with no output by then
        (FirstTokenTimeout); `on_first_token` is told the TTFT when output starts.
        """
        total = min(budget or self.settings.agent_request_timeout, self.settings.agent_request_timeout)
        if total <= 0:
            raise EndpointTimeout("no time left for the call", endpoint=endpoint.id)
        request = build_request(endpoint, job, self.settings, stream=stream)
        started = time.monotonic()
        call = _Call(endpoint.id, started=started, total=total, on_token=on_token,
                     max_bytes=self.settings.agent_max_response_bytes,
                     max_line=self.settings.agent_max_line_bytes, on_first_token=on_first_token)
        with call_deadline(total, cancel=cancel) as deadline:
            call.hold_first_token(deadline, first_token_timeout)
            try:
                with self.http.stream(
                    "POST", request.url, json=request.body, headers={**request.headers, **IDENTITY},
                    timeout=self._timeout(total),
                ) as response:
                    call.consume(response)
            except (httpx.HTTPError, LLMPoolError) as exc:
                if cancel is not None and cancel.cancelled:  # whatever the cut socket raised, we cut it
                    raise CallCancelled(f"call to {endpoint.id} cancelled (its twin answered first, or the job "
                                        "was cancelled)", endpoint=endpoint.id) from exc
                error = exc if isinstance(exc, LLMPoolError) else _translated(exc, deadline, endpoint.id, call)
                error = _while_starting(endpoint, error, call.completion.pieces)
                if error is exc:
                    raise
                raise error from exc
        call.completion.check_tool_calls()
        _count_usage(call, job)
        return CallOutcome(call.completion, call.ttft, time.monotonic() - started)

    def send(self, request: LLMRequest, timeout: float) -> httpx.Response:
        """A plain request (connection tests): the status and at most 64 KiB of body, within `timeout`."""
        with call_deadline(timeout) as deadline:
            try:
                with self.http.stream("POST", request.url, json=request.body, timeout=timeout,
                                      headers={**request.headers, **IDENTITY}) as response:
                    body = _read_bounded(response, MAX_ERROR_BODY)
                    return httpx.Response(response.status_code, content=body, request=response.request)
            except httpx.HTTPError as exc:
                if deadline.expired:
                    raise RequestTimeout(f"{request.url} took longer than {timeout:g}s",
                                         endpoint=request.url) from exc
                raise translate_http_error(exc, request.url, 0) from exc


def _count_usage(call: _Call, job: ChatJob) -> None:
    """The answer's usage made truthful (llmpool.usage): estimates where the server sent none."""
    done = call.completion
    usage = truthful_usage(done.usage, job, content=done.content, tool_calls=done.tool_calls,
                           chunks=done.pieces if call.streamed else None, endpoint=call.endpoint_id)
    done.usage, done.usage_estimated = usage.as_dict(), usage.estimated


def _while_starting(endpoint: Endpoint, error: LLMPoolError, pieces: int) -> LLMPoolError:
    """A call refused by a container the backend lists as still starting (no output yet) is its
    start, not a failure: EndpointStarting, as the health pass (llmpool.prober) reads it."""
    starting = endpoint.container_starting and pieces == 0 and isinstance(
        error, EndpointUnreachable | ServerError | StreamCut | EndpointTimeout | EndpointRejected)
    if not starting or isinstance(error, EndpointStarting):
        return error
    return EndpointStarting(f"{endpoint.id}: container starting ({error.message})", endpoint=endpoint.id)


def _translated(exc: httpx.HTTPError, deadline: CallDeadline, endpoint_id: str, call: _Call) -> LLMPoolError:
    if deadline.expired:  # a socket operation was cut at the total deadline, not at its own timeout
        return call.timed_out()
    return translate_http_error(exc, endpoint_id, call.completion.pieces)


class _Call:
    """The reading side of one call: status check, then JSON or SSE, within its deadline and caps."""

    def __init__(self, endpoint_id: str, *, started: float, total: float, on_token: TokenSink | None,
                 max_bytes: int, max_line: int, on_first_token: FirstTokenSink | None = None) -> None:
        self.endpoint_id = endpoint_id
        self.started = started
        self.total = total
        self.deadline = started + total
        self.on_token = on_token
        self.on_first_token = on_first_token
        self.max_bytes = max_bytes
        self.max_line = max_line
        self.completion = Completion()
        self.streamed = False  # an SSE answer: its output chunks count its tokens (llmpool.usage)
        self.ttft: float | None = None
        self.first_token_wait: float | None = None  # a first-token bound shorter than the total
        self._held: CallDeadline | None = None  # the socket deadline, pulled in until the first token

    def hold_first_token(self, deadline: CallDeadline, seconds: float | None) -> None:
        """Until output starts, every socket operation ends `seconds` after the start, not at the total."""
        if seconds is not None and 0 < seconds < self.total:
            self.first_token_wait = seconds
            self._held = deadline
            deadline.at = min(deadline.at, self.started + seconds)

    def _no_first_token_yet(self) -> bool:
        return (self.ttft is None and self.first_token_wait is not None
                and time.monotonic() >= self.started + self.first_token_wait)

    def timed_out(self) -> EndpointTimeout:
        if self._no_first_token_yet():
            return FirstTokenTimeout(f"{self.endpoint_id} sent no token in {self.first_token_wait:.3g}s "
                                     f"(its first-token timeout, from its recent TTFTs)",
                                     endpoint=self.endpoint_id, tokens_sent=0, timeout=self.first_token_wait)
        return RequestTimeout(f"{self.endpoint_id} exceeded the request timeout ({self.total:g}s)",
                              endpoint=self.endpoint_id, tokens_sent=self.completion.pieces)

    def consume(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            body = _read_bounded(response, MAX_ERROR_BODY)
            raise status_error(self.endpoint_id, response.status_code, body,
                               response.headers.get("retry-after"))
        chunks = self._bounded(response.iter_bytes())
        if "text/event-stream" in response.headers.get("content-type", ""):
            self.streamed = True
            self._consume_sse(chunks)
        else:
            self.completion = parse_completion(b"".join(chunks).decode("utf-8", errors="replace"))
            if not (self.completion.content or self.completion.tool_calls):
                self._check_finished("answered nothing")  # empty and unfinished: cut, not an answer
            self._mark_output(self.completion.content)

    def _bounded(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The body's chunks while within the deadline and AGENT_MAX_RESPONSE_BYTES."""
        budget = ByteBudget(self.max_bytes)
        for chunk in chunks:
            if time.monotonic() > self.deadline or self._no_first_token_yet():  # keep-alives are no token
                raise self.timed_out()
            budget.spend(len(chunk))
            yield chunk

    def _consume_sse(self, chunks: Iterator[bytes]) -> None:
        splitter = LineSplitter(self.max_line)
        for chunk in chunks:
            for line in splitter.feed(chunk):
                if self._take_line(line):
                    return
        for line in splitter.finish():
            if self._take_line(line):
                return
        self._check_finished("ended the stream")

    def _check_finished(self, how: str) -> None:
        """An answer no choice finished is incomplete: llama-cpp-python ends a stream it interrupts so."""
        if self.completion.finish_reason is None:
            raise IncompleteAnswer(f"{self.endpoint_id} {how} before any choice had a finish_reason "
                                   f"({self.completion.pieces} output chunks came)",
                                   endpoint=self.endpoint_id, tokens_sent=self.completion.pieces)

    def _take_line(self, line: str) -> bool:
        """Fold one SSE line in; True at `data: [DONE]`."""
        payload = sse_payload(line)
        if not payload:  # comments (": keepalive"), blank lines, other fields
            return False
        if payload == "[DONE]":
            self._check_finished("sent [DONE]")
            return True
        before = self.completion.pieces
        text = parse_chunk(self.completion, payload)
        if self.completion.pieces > before:
            self._mark_output(text)
        return False

    def _mark_output(self, text: str) -> None:
        if self.ttft is None:
            self.ttft = time.monotonic() - self.started
            if self._held is not None:  # output started: from now on only the total bounds the call
                self._held.at = self.deadline
            if self.on_first_token is not None:
                self.on_first_token(self.ttft)
        if text and self.on_token is not None:
            self.on_token(text)
