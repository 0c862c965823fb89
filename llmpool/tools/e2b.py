"""run_code in E2B's code interpreter sandbox, through E2B's HTTP API (no SDK: its endpoints are
settings, so a self-hosted E2B or a mock works as well as e2b.app).

The calls the official SDK (e2b, e2b-code-interpreter) makes:
1. `POST {api}/sandboxes` with `X-API-KEY`, body {"templateID": "code-interpreter-v1", "timeout": s,
   "secure": true, ...}: 201 {"sandboxID", "envdAccessToken"?, "trafficAccessToken"?, "domain"?}.
2. `POST {jupyter}/execute` {"code"} with headers E2b-Sandbox-Id, E2b-Sandbox-Port: 49999 and the
   sandbox's tokens: NDJSON lines {"type": "stdout"|"stderr"|"result"|"error"|"end_of_execution"|...}.
3. `DELETE {api}/sandboxes/{id}`: 204.
{api} is E2B_API_URL or https://api.{E2B_DOMAIN}; {jupyter} is E2B_SANDBOX_URL or
https://49999-{sandboxID}.{domain the API returned, else E2B_DOMAIN}.

The sandbox is killed after every run; it is also created with a timeout just past the run's, so a
worker that dies mid-run cannot leak one for longer than that.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx

from llmpool.http_deadline import call_deadline, make_bounded_client
from llmpool.tools import ToolResult
from llmpool.tools.code_output import CodeError, CodeOutput, render, summarize
from llmpool.tools.results import failed, finished, one_line, scrub
from llmpool.tools.run_code import checked_run, schema

__all__ = ["E2BRunCode", "JUPYTER_PORT"]

log = logging.getLogger("llmpool.tools.run_code")

JUPYTER_PORT = 49999
SANDBOX_TTL_MARGIN = 10  # seconds a sandbox outlives its run at most, when its kill never arrives
KILL_TIMEOUT = 1.5  # seconds for the kill after the run: within the tool loop's grace (its TTL is the backstop)
MAX_LINE_BYTES = 1024 * 1024
MAX_STREAM_BYTES = 16 * 1024 * 1024  # of one execution's NDJSON, whatever the result cap
MAX_API_ANSWER_BYTES = 64 * 1024  # of the API's answer to a sandbox's creation (a small JSON object)
ERROR_BODY_BYTES = 4096  # of an error answer: what its first line needs


class _Failure(Exception):
    """A run that failed for a named reason (what the LLM reads)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


class E2BRunCode:
    """The run_code tool in E2B sandboxes: one fresh sandbox per run."""

    name = "run_code"

    def __init__(self, *, api_key: str, domain: str, api_url: str | None, sandbox_url: str | None, template: str,
                 timeout: float, max_result_bytes: int, client: httpx.Client | None = None) -> None:
        self.timeout = timeout
        self._api_key = api_key
        self._domain = domain
        self._api_url = (api_url or f"https://api.{domain}").rstrip("/")
        self._sandbox_url = sandbox_url.rstrip("/") if sandbox_url else None
        self._template = template
        self._max_bytes = max_result_bytes
        self._client = client or make_bounded_client(max_connections=32, timeout=timeout)

    def __repr__(self) -> str:  # never the key
        return f"E2BRunCode(api={self._api_url!r}, template={self._template!r}, timeout={self.timeout})"

    def schema(self) -> dict[str, Any]:
        return schema("in a fresh E2B cloud sandbox (a Jupyter kernel with the usual data libraries)")

    def run(self, arguments: dict[str, Any], *, deadline: float) -> ToolResult:
        started = time.monotonic()
        checked = checked_run(arguments, timeout=self.timeout, deadline=deadline, started=started,
                              max_bytes=self._max_bytes)
        if isinstance(checked, ToolResult):
            return checked
        code, left = checked
        secrets: list[str | None] = [self._api_key]
        try:
            with call_deadline(left):
                sandbox = self._create(math.ceil(left) + SANDBOX_TTL_MARGIN)
                secrets += [sandbox.get("envdAccessToken"), sandbox.get("trafficAccessToken")]
                try:
                    output = self._execute(code, sandbox, left)
                finally:
                    self._kill(sandbox["sandboxID"])
        except _Failure as exc:
            result = failed(exc.error, scrub(exc.message, secrets), started=started, max_bytes=self._max_bytes)
        else:
            error = output.stopped or ("code_error" if output.error is not None else None)
            result = finished(scrub(render(output), secrets), started=started, max_bytes=self._max_bytes,
                              summary=scrub(summarize(output), secrets), error=error, dropped=output.dropped)
        log.info("run_code (e2b): %s in %.2fs (%d bytes)", result.error or "ok", result.duration, result.size)
        return result

    def _api_headers(self) -> dict[str, str]:
        return {"X-API-KEY": self._api_key, "Content-Type": "application/json"}

    def _create(self, ttl: int) -> dict[str, Any]:
        body = {"templateID": self._template, "timeout": ttl, "secure": True, "metadata": {}, "envVars": {}}
        try:
            with self._client.stream("POST", f"{self._api_url}/sandboxes", json=body,
                                     headers=self._api_headers()) as response:
                ok = response.status_code in (200, 201)
                raw, more = _read_at_most(response, MAX_API_ANSWER_BYTES if ok else ERROR_BODY_BYTES)
        except httpx.TimeoutException:
            raise _Failure("timeout", "E2B did not create a sandbox in time") from None
        except httpx.HTTPError as exc:
            raise _Failure("http_error", f"cannot reach E2B ({type(exc).__name__})") from None
        if not ok:
            raise _Failure("http_error", f"E2B refused to create a sandbox: HTTP {response.status_code}: "
                                         f"{one_line(raw.decode('utf-8', errors='replace'), 200)}")
        if more:
            raise _Failure("bad_response", f"E2B's sandbox answer is larger than {MAX_API_ANSWER_BYTES} bytes")
        try:
            sandbox = json.loads(raw)
        except ValueError:
            raise _Failure("bad_response", "E2B's sandbox answer is not JSON") from None
        if not isinstance(sandbox, dict) or not isinstance(sandbox.get("sandboxID"), str) \
                or not sandbox["sandboxID"].strip():
            raise _Failure("bad_response", "E2B's sandbox answer has no sandboxID")
        return {key: value for key, value in sandbox.items() if isinstance(value, str)}

    def _jupyter_url(self, sandbox: dict[str, Any]) -> str:
        if self._sandbox_url:
            return self._sandbox_url
        return f"https://{JUPYTER_PORT}-{sandbox['sandboxID']}.{sandbox.get('domain') or self._domain}"

    def _execute(self, code: str, sandbox: dict[str, Any], left: float) -> CodeOutput:
        headers = {"Content-Type": "application/json", "E2b-Sandbox-Id": sandbox["sandboxID"],
                   "E2b-Sandbox-Port": str(JUPYTER_PORT)}
        if sandbox.get("envdAccessToken"):
            headers["X-Access-Token"] = sandbox["envdAccessToken"]
        if sandbox.get("trafficAccessToken"):
            headers["E2B-Traffic-Access-Token"] = sandbox["trafficAccessToken"]
        body = {"code": code, "context_id": None, "language": None, "env_vars": None}
        output = CodeOutput()
        try:
            with self._client.stream("POST", f"{self._jupyter_url(sandbox)}/execute", json=body, headers=headers,
                                     timeout=left) as response:
                if response.status_code != 200:
                    raw, _ = _read_at_most(response, ERROR_BODY_BYTES)
                    raise _Failure("sandbox_error", f"the sandbox answered HTTP {response.status_code}: "
                                                    f"{one_line(raw.decode('utf-8', errors='replace'), 200)}")
                for line in _lines(response):
                    if _apply(output, line, self._max_bytes):
                        return output
        except httpx.TimeoutException:
            output.stopped = "timeout"
            return output  # what it printed so far is worth reading
        except httpx.HTTPError as exc:
            raise _Failure("sandbox_error", f"the sandbox connection failed ({type(exc).__name__})") from None
        raise _Failure("sandbox_error", "the sandbox ended the execution without end_of_execution")

    def _kill(self, sandbox_id: str) -> None:
        # Its own short deadline: the run's may be spent, and a kept sandbox costs money until its timeout.
        try:
            # Streamed and left unread: only the status matters, whatever body comes with it.
            with call_deadline(KILL_TIMEOUT), self._client.stream(
                    "DELETE", f"{self._api_url}/sandboxes/{sandbox_id}", headers=self._api_headers(),
                    timeout=KILL_TIMEOUT) as response:
                pass
            if response.status_code not in (200, 204, 404):
                log.warning("run_code (e2b): killing sandbox %s answered HTTP %d; it ends at its timeout",
                            sandbox_id, response.status_code)
        except httpx.HTTPError as exc:
            log.warning("run_code (e2b): cannot kill sandbox %s (%s); it ends at its timeout", sandbox_id,
                        type(exc).__name__)


def _read_at_most(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the body, and whether it had more: a server that sends without end
    (or a huge error page) costs neither the run's memory nor the rest of its time."""
    kept = b""
    for chunk in response.iter_bytes():
        kept += chunk
        if len(kept) > limit:
            return kept[:limit], True
    return kept, False


def _lines(response: httpx.Response) -> Iterator[bytes]:
    """The NDJSON lines of the execution, each and all bounded in size."""
    buffer, total = b"", 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > MAX_STREAM_BYTES:
            raise _Failure("bad_response", f"the execution's output is larger than {MAX_STREAM_BYTES} bytes")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line.strip())
        if len(buffer) > MAX_LINE_BYTES:
            raise _Failure("bad_response", f"an output line is longer than {MAX_LINE_BYTES} bytes")
    if buffer.strip():
        yield buffer


def _apply(output: CodeOutput, line: bytes, cap: int) -> bool:
    """Add one NDJSON event to `output`; True at the end of the execution."""
    try:
        event = json.loads(line)
    except ValueError:
        raise _Failure("bad_response", "the sandbox sent a line that is not JSON") from None
    if not isinstance(event, dict):
        raise _Failure("bad_response", "the sandbox sent a line that is not a JSON object")
    kind = event.get("type")
    if kind in ("stdout", "stderr"):
        text = event.get("text")
        if isinstance(text, str):
            kept = output.stdout if kind == "stdout" else output.stderr
            room = max(0, cap - len(kept))
            output.dropped += len(text[room:].encode())
            setattr(output, kind, kept + text[:room])
    elif kind == "result":
        text = event.get("text")
        if isinstance(text, str):
            output.results.append(text[:cap])
        elif any(key in event for key in ("png", "jpeg", "svg", "html", "chart")):
            output.results.append("(a display without text: " + ", ".join(
                key for key in ("png", "jpeg", "svg", "html", "chart") if key in event) + ")")
    elif kind == "error":
        output.error = CodeError(name=str(event.get("name") or "Error"), value=str(event.get("value") or "")[:cap],
                                 traceback=str(event.get("traceback") or "")[-cap:])
    elif kind == "unexpected_end_of_execution":
        output.stopped = "sandbox_error"
        return True
    return kind == "end_of_execution"
