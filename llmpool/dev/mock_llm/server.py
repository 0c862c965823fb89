"""MockLLM: run the containers and the control server on one event loop in a background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from llmpool.dev.mock_llm.backend import build_backend_app
from llmpool.dev.mock_llm.container import Container, bind_socket, serve_app, stop_server, url_host
from llmpool.dev.mock_llm.control import MockDriver
from llmpool.dev.mock_llm.fleet import Fleet
from llmpool.dev.mock_llm.state import ContainerSpec

__all__ = ["MockLLM"]

log = logging.getLogger("llmpool.dev.mock_llm")
T = TypeVar("T")
CALL_TIMEOUT = 30.0


class MockLLM(MockDriver):
    """Mock LLM containers plus a TT-Studio-style backend, served from a background thread."""

    def __init__(
        self, containers: Iterable[ContainerSpec] = (), *, host: str = "127.0.0.1",
        control_port: int | None = None, backend: bool = True, advertise_host: str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        """`control_port` None or 0 picks a free port; `backend=False` runs no control server.

        `advertise_host` is the host name put in URLs and the backend listing (default: host).
        """
        self.host = host
        self.advertise_host = advertise_host
        self.specs = list(containers)
        self.control_port = (control_port or 0) if backend else None
        self.start_timeout = start_timeout
        self._fleet: Fleet | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> MockLLM:
        """Start every server and return once all their ports accept connections."""
        if self._thread is not None:
            raise RuntimeError("this MockLLM was already started")
        self._thread = threading.Thread(target=self._run, name="mock-llm", daemon=True)
        self._thread.start()
        try:
            self._ready.result(self.start_timeout)
            ports = [c["port"] for c in self.containers() if c["listening"]]
            deadline = time.monotonic() + self.start_timeout
            for port in [*ports, *([self.control_port] if self.control_port else [])]:
                _wait_accepting(self.host, port, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Shut every server down and join the thread; safe to call twice."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"the mock LLM thread did not stop within {timeout}s")

    def __enter__(self) -> MockLLM:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._fleet = fleet = Fleet(self.host, self.advertise_host)
        backend: tuple[uvicorn.Server, asyncio.Task[None]] | None = None
        try:
            for spec in self.specs:
                await fleet.add(spec)
            if self.control_port is not None:
                sock = bind_socket(self.host, self.control_port)
                self.control_port = sock.getsockname()[1]
                backend = await serve_app(build_backend_app(fleet), sock)
            self._ready.set_result(None)
            await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                log.exception("mock LLM stopped on an error")
        finally:
            # fleet.close() first sets `closing`, which also ends a hanging /models/deployed/.
            await asyncio.gather(fleet.close(), *([stop_server(*backend)] if backend else []))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the mock's loop and return its result (its exception is raised here)."""
        loop = self._loop
        alive = self._thread is not None and self._thread.is_alive()
        if loop is None or not alive or not self._ready.done() or loop.is_closed():
            coro.close()
            raise RuntimeError("the mock LLM is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(CALL_TIMEOUT)

    # -- MockDriver --------------------------------------------------------------------------

    @property
    def backend_url(self) -> str:
        if not self.control_port:
            raise RuntimeError("this mock runs no control server (backend=False)")
        return f"http://{url_host(self.advertise_host or self.host)}:{self.control_port}"

    def containers(self) -> list[dict[str, Any]]:
        return self._call(self._on_loop(lambda fleet: fleet.describe()))

    def describe(self, name: str) -> dict[str, Any]:
        return self._call(self._on_loop(lambda fleet: fleet.get(name).describe()))

    def url(self, name: str) -> str:
        # Cheap and thread-safe enough: host and port never change after start.
        return self._container(name).url

    def port(self, name: str) -> int:
        return self._container(name).port

    def add_container(self, spec: ContainerSpec) -> dict[str, Any]:
        async def add(fleet: Fleet) -> dict[str, Any]:
            return (await fleet.add(spec)).describe()

        return self._call(self._with_fleet(add))

    def remove_container(self, name: str) -> None:
        self._call(self._with_fleet(lambda fleet: fleet.remove(name)))

    def configure(self, name: str, **knobs: Any) -> dict[str, Any]:
        return self._call(self._with_fleet(lambda fleet: fleet.get(name).configure(knobs)))

    def config(self, name: str) -> dict[str, Any]:
        return self._call(self._on_loop(lambda fleet: fleet.get(name).knobs.to_dict()))

    def stats(self, name: str) -> dict[str, Any]:
        return self._call(self._on_loop(lambda fleet: fleet.get(name).stats.to_dict()))

    def reset(self, name: str) -> None:
        self._call(self._on_loop(lambda fleet: fleet.get(name).stats.reset()))

    def release(self, name: str) -> dict[str, Any]:
        return self._call(self._on_loop(lambda fleet: fleet.get(name).release()))

    def set_backend_fault(self, fault: str) -> None:
        self._call(self._on_loop(lambda fleet: fleet.set_backend_fault(fault)))

    def _container(self, name: str) -> Container:
        if self._fleet is None:
            raise RuntimeError("the mock LLM is not running")
        return self._fleet.get(name)

    async def _on_loop(self, read: Any) -> Any:
        """Run a plain function of the fleet on the loop, so it never races a request."""
        assert self._fleet is not None
        return read(self._fleet)

    async def _with_fleet(self, action: Any) -> Any:
        assert self._fleet is not None
        return await action(self._fleet)


def _wait_accepting(host: str, port: int, deadline: float) -> None:
    """Block until a TCP connect to host:port succeeds, or TimeoutError at `deadline`."""
    connect_host = url_host(host).strip("[]")
    while True:
        try:
            with socket.create_connection((connect_host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"port {port} does not accept connections") from exc
            time.sleep(0.01)
