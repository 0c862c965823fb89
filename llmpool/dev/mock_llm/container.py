"""One mock model container: its uvicorn server on its own port, its knobs, faults and stats."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from typing import Any

import uvicorn

from llmpool.dev.mock_llm.openai_app import build_app
from llmpool.dev.mock_llm.state import (
    HEALTH_FAULTS,
    Conflict,
    ContainerSpec,
    Knobs,
    Stats,
    deploy_id,
)

__all__ = ["Container", "bind_socket", "serve_app", "stop_server", "url_host"]

log = logging.getLogger("llmpool.dev.mock_llm")

START_TIMEOUT = 10.0
# In-flight answers get this long when a container stops (refuse, remove, shutdown); then
# uvicorn cancels them, which keeps every stop bounded.
GRACEFUL_SECONDS = 1


def url_host(host: str) -> str:
    """How a URL names `host`: wildcards become loopback, IPv6 goes in brackets."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (0 = any free port), or Conflict if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # SO_REUSEADDR lets `refuse` -> `none` listen again at once on the same port (TIME_WAIT).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if os.environ.get("MOCK_LLM_REUSE_PORT") == "1":
        # The bench runs several mock processes on one port (the kernel spreads the connections),
        # so that the mock is never what limits the figures (bench/harness.py).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise Conflict(f"port {port} on {host} is already in use") from exc
        raise
    return sock


async def serve_app(app: Any, sock: socket.socket) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Start uvicorn for `app` on the bound `sock` and return once it accepts connections."""
    config = uvicorn.Config(
        app, http="h11", ws="none", lifespan="off", log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    server = uvicorn.Server(config)
    # Off the main thread uvicorn installs no signal handlers, and the CLI runs us in a thread.
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises what stopped it
            raise RuntimeError("uvicorn exited during start-up")
        if asyncio.get_running_loop().time() > deadline:
            await stop_server(server, task)
            raise TimeoutError(f"uvicorn did not start within {START_TIMEOUT}s")
        await asyncio.sleep(0.01)
    return server, task


async def stop_server(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Stop a uvicorn server started by serve_app, bounded in time."""
    server.should_exit = True
    try:
        await asyncio.wait_for(asyncio.shield(task), GRACEFUL_SECONDS + 3.0)
    except TimeoutError:
        server.force_exit = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except Exception:  # noqa: BLE001 - a crashed server is stopped all the same
        log.exception("mock server crashed while stopping")


class Container:
    """A mock model container; every method runs on the mock's event loop."""

    def __init__(self, spec: ContainerSpec, *, host: str, advertise: str | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.host = host
        # The host name URLs and the backend listing give (a compose service name, say).
        self.advertise = url_host(advertise or host)
        self.port = spec.port
        self.knobs = spec.knobs()
        self.stats = Stats()
        self.closing = asyncio.Event()
        self.released = asyncio.Event()  # release() sets it: answers waiting for a token go on now
        self.app = build_app(self)
        self._server: tuple[uvicorn.Server, asyncio.Task[None]] | None = None
        self._revert: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:7000 (chat is at /v1/chat/completions)."""
        return f"http://{self.advertise}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Take the port and, unless the fault is `refuse`, listen on it."""
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        if self.knobs.fault == "refuse":
            sock.close()
        else:
            await self._listen(sock)
        self._arm_revert()

    async def close(self) -> None:
        """Stop listening and forget timers; the container can be started again."""
        if self._revert:
            self._revert.cancel()
            self._revert = None
        await self._unlisten()

    async def configure(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Apply knob and fault changes (all checked first) and return the new config."""
        self.knobs = self.knobs.merged(updates)
        if self.knobs.fault == "refuse":
            await self._unlisten()
        elif not self.listening:
            await self._listen(bind_socket(self.host, self.port))
        if any(k.startswith("fault") for k in updates):
            self._arm_revert()
        return self.knobs.to_dict()

    def release(self) -> dict[str, Any]:
        """Send now the next token of every answer waiting for one (a benchmark's long first-token
        hold ends once every call is open); answers that start later keep the usual timing."""
        waiting = self.stats.in_flight
        self.released.set()
        self.released = asyncio.Event()
        return {"released": waiting}

    def take_fault(self, kind: str) -> str | None:
        """The fault that hits this request (`kind` chat or health), spending one of its budget."""
        knobs = self.knobs
        fault = knobs.fault
        hits = fault in HEALTH_FAULTS if kind == "health" else fault != "slow_health"
        if fault in ("none", "refuse") or not hits:
            return None
        if knobs.fault_requests is not None:
            left = knobs.fault_requests - 1
            self.knobs = knobs.merged({"fault": "none"} if left == 0 else {"fault_requests": left})
        return fault

    def describe(self) -> dict[str, Any]:
        """Name, URL, port, identity, knobs and stats, JSON-ready."""
        return {
            "name": self.name, "deploy_id": deploy_id(self.name), "url": self.url,
            "port": self.port, "listening": self.listening, "spec": self.spec.identity(),
            "config": self.knobs.to_dict(), "stats": self.stats.to_dict(),
        }

    async def _listen(self, sock: Any) -> None:
        self.closing = asyncio.Event()
        self._server = await serve_app(self.app, sock)
        log.info("container %s listening on %s", self.name, self.url)

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # Hanging and slow answers watch `closing`, so they end before uvicorn's grace expires.
        self.closing.set()
        await stop_server(*server)
        log.info("container %s stopped listening on port %d", self.name, self.port)

    def _arm_revert(self) -> None:
        """(Re)start the timer that sets the fault back to none after fault_seconds."""
        if self._revert:
            self._revert.cancel()
            self._revert = None
        seconds = self.knobs.fault_seconds
        if self.knobs.fault != "none" and seconds:
            self._revert = asyncio.create_task(self._revert_after(seconds, self.knobs))

    async def _revert_after(self, seconds: float, armed: Knobs) -> None:
        await asyncio.sleep(seconds)
        if self.knobs.fault == armed.fault:
            self._revert = None  # so configure() does not cancel the task running it
            await self.configure({"fault": "none"})
