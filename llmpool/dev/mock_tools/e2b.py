"""A mock of E2B: its API (`POST /sandboxes`, `DELETE /sandboxes/{id}`) and a sandbox's Jupyter
`POST /execute` (NDJSON), both on one port, the sandbox named by the E2b-Sandbox-Id header as E2B's
SDK sends it when E2B_SANDBOX_URL is set.

The "interpreter" runs the code with llmpool's local runner (a real limited process), unless
`outputs` scripts the events for that exact code. Faults (`fault`): "create_500", "execute_500",
"hang" (execute never answers), "bad_json" (a garbled line), "cut" (no end_of_execution),
"kill_500". `live()` lists the sandboxes created and neither killed nor expired, so a test can
check that none leaked.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmpool.tools.code_output import CodeOutput
from llmpool.tools.local_runner import LocalLimits, run_python

__all__ = ["MockE2B", "E2B_FAULTS"]

E2B_FAULTS = (None, "create_500", "execute_500", "hang", "bad_json", "cut", "kill_500")
RUN_TIMEOUT = 30.0


@dataclass
class _Sandbox:
    expires: float
    token: str
    template: str


@dataclass
class MockE2B:
    """The mock's script and state; change the fields at any time from the test's thread."""

    api_key: str = "e2b_mock_key"
    fault: str | None = None
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sandboxes: dict[str, _Sandbox] = field(default_factory=dict)
    created: int = 0
    killed: int = 0
    executions: list[str] = field(default_factory=list)
    timeouts: list[int] = field(default_factory=list)  # the timeout each sandbox was created with
    stopping: bool = False

    def reset(self) -> None:
        """No fault, no script, no sandbox, counters at zero."""
        self.fault = None
        self.outputs.clear()
        self.sandboxes.clear()
        self.created = self.killed = 0
        self.executions.clear()
        self.timeouts.clear()

    def live(self) -> list[str]:
        now = time.time()
        return [sid for sid, box in self.sandboxes.items() if box.expires > now]

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/sandboxes", self._create, methods=["POST"]),
            Route("/sandboxes/{sandbox_id}", self._kill, methods=["DELETE"]),
            Route("/execute", self._execute, methods=["POST"]),
        ])

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("x-api-key") == self.api_key

    async def _create(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"code": 401, "message": "Invalid API key"}, status_code=401)
        if self.fault == "create_500":
            return JSONResponse({"code": 500, "message": "cannot create sandbox"}, status_code=500)
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("templateID"), str):
            return JSONResponse({"code": 400, "message": "templateID is required"}, status_code=400)
        timeout = body.get("timeout", 15)
        timeout = timeout if isinstance(timeout, int) and timeout > 0 else 15
        sandbox_id = "i" + secrets.token_hex(10)
        token = secrets.token_hex(16)
        self.sandboxes[sandbox_id] = _Sandbox(expires=time.time() + timeout, token=token,
                                              template=body["templateID"])
        self.created += 1
        self.timeouts.append(timeout)
        return JSONResponse({"templateID": body["templateID"], "sandboxID": sandbox_id, "clientID": "mock",
                             "envdVersion": "0.2.0", "envdAccessToken": token, "domain": None}, status_code=201)

    async def _kill(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"code": 401, "message": "Invalid API key"}, status_code=401)
        if self.fault == "kill_500":
            return JSONResponse({"code": 500, "message": "cannot kill"}, status_code=500)
        if self.sandboxes.pop(request.path_params["sandbox_id"], None) is None:
            return JSONResponse({"code": 404, "message": "sandbox not found"}, status_code=404)
        self.killed += 1
        return Response(status_code=204)

    async def _execute(self, request: Request) -> Response:
        box = self.sandboxes.get(request.headers.get("e2b-sandbox-id", ""))
        if box is None or box.expires <= time.time():
            return Response("The sandbox was not found", status_code=502)
        if request.headers.get("x-access-token") != box.token:
            return JSONResponse({"code": 401, "message": "invalid access token"}, status_code=401)
        try:
            code = json.loads(await request.body())["code"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"code": 400, "message": "code is required"}, status_code=400)
        self.executions.append(code)
        if self.fault == "execute_500":
            return Response("kernel died", status_code=500)
        if self.fault == "hang":
            while not self.stopping and not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return Response(status_code=504)
        events = self.outputs.get(code)
        if events is None:
            output = await asyncio.to_thread(run_python, code, limits=LocalLimits(), timeout=RUN_TIMEOUT,
                                             max_output_bytes=1024 * 1024)
            events = _events(output)
        if self.fault == "bad_json":
            events = [events[0], "{garbled"] if events else ["{garbled"]  # type: ignore[list-item]
        if self.fault == "cut":
            events = [event for event in events if event.get("type") != "end_of_execution"]
        return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")


async def _ndjson(events: list[Any]) -> AsyncIterator[bytes]:
    for event in events:
        yield (event if isinstance(event, str) else json.dumps(event)).encode() + b"\n"


def _events(output: CodeOutput) -> list[dict[str, Any]]:
    """The events E2B's Jupyter server would send for this run."""
    stamp = int(time.time() * 1e9)
    events: list[dict[str, Any]] = []
    if output.stdout:
        events.append({"type": "stdout", "text": output.stdout, "timestamp": stamp})
    if output.stderr:
        events.append({"type": "stderr", "text": output.stderr, "timestamp": stamp})
    events.extend({"type": "result", "text": text, "is_main_result": True} for text in output.results)
    if output.error is not None:
        events.append({"type": "error", "name": output.error.name, "value": output.error.value,
                       "traceback": output.error.traceback})
    events.append({"type": "number_of_executions", "execution_count": 1})
    events.append({"type": "end_of_execution"})
    return events
