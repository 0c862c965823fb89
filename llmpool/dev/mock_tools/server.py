"""MockTools: the mock Tavily and E2B servers on free ports, served from a background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from types import TracebackType
from typing import Any

from llmpool.dev.mock_llm.container import bind_socket, serve_app, stop_server, url_host
from llmpool.dev.mock_tools.e2b import MockE2B
from llmpool.dev.mock_tools.tavily import MockTavily

__all__ = ["MockTools"]

START_TIMEOUT = 15.0


class MockTools:
    """Both mocks; `tavily_url` and `e2b_url` once started. Use as a context manager."""

    def __init__(self, *, host: str = "127.0.0.1", tavily_port: int = 0, e2b_port: int = 0,
                 tavily: MockTavily | None = None, e2b: MockE2B | None = None) -> None:
        self.host = host
        self.tavily = tavily or MockTavily()
        self.e2b = e2b or MockE2B()
        self._ports = (tavily_port, e2b_port)
        self.tavily_url = ""
        self.e2b_url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()

    def start(self) -> MockTools:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="mock-tools", daemon=True)
        self._thread.start()
        try:
            self._ready.result(START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        servers: list[Any] = []
        try:
            urls = []
            for app, port in ((self.tavily.app(), self._ports[0]), (self.e2b.app(), self._ports[1])):
                sock = bind_socket(self.host, port)
                servers.append(await serve_app(app, sock))
                urls.append(f"http://{url_host(self.host)}:{sock.getsockname()[1]}")
            self.tavily_url, self.e2b_url = urls
        except BaseException as exc:
            self._ready.set_exception(exc)
            for server, task in servers:
                await stop_server(server, task)
            return
        self._ready.set_result(None)
        await self._stop.wait()
        for server, task in servers:
            await stop_server(server, task)

    def reset(self) -> None:
        """Both mocks back to their defaults (keys kept), for the next test on the same servers."""
        self.tavily.reset()
        self.e2b.reset()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop both servers (hanging answers end at once) and join the thread; safe to call twice."""
        self.tavily.stopping = self.e2b.stopping = True
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> MockTools:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
