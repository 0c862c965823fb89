"""The set of containers one mock runs, plus the backend's own fault; lives on the mock's loop."""

from __future__ import annotations

import asyncio
from typing import Any

from llmpool.dev.mock_llm.container import Container
from llmpool.dev.mock_llm.state import BACKEND_FAULTS, BadConfig, Conflict, ContainerSpec, UnknownContainer

__all__ = ["Fleet"]


class Fleet:
    """Named containers on one host, started and stopped together."""

    def __init__(self, host: str, advertise: str | None = None) -> None:
        self.host = host
        self.advertise = advertise
        self.containers: dict[str, Container] = {}
        self.backend_fault = "none"
        self.closing = asyncio.Event()  # wakes a hanging /models/deployed/ at shutdown

    def get(self, name: str) -> Container:
        """The container called `name`, or UnknownContainer."""
        try:
            return self.containers[name]
        except KeyError:
            known = sorted(self.containers)
            raise UnknownContainer(f"no container named {name!r}; known: {known}") from None

    async def add(self, spec: ContainerSpec) -> Container:
        """Start a container for `spec` and list it; Conflict if the name or port is taken."""
        if spec.name in self.containers:
            raise Conflict(f"a container named {spec.name!r} already exists")
        taken = {c.port for c in self.containers.values()}
        if spec.port and spec.port in taken:
            raise Conflict(f"port {spec.port} is already used by another container")
        container = Container(spec, host=self.host, advertise=self.advertise)
        self.containers[spec.name] = container  # reserve the name while it starts
        try:
            await container.start()
        except BaseException:
            del self.containers[spec.name]
            raise
        return container

    async def remove(self, name: str) -> None:
        """Stop the container and de-list it."""
        container = self.get(name)
        del self.containers[name]
        await container.close()

    async def close(self) -> None:
        """Stop every container at once."""
        self.closing.set()
        containers = list(self.containers.values())
        self.containers.clear()
        await asyncio.gather(*(c.close() for c in containers), return_exceptions=True)

    def set_backend_fault(self, fault: str) -> dict[str, Any]:
        """Make GET /models/deployed/ answer normally, 500, broken JSON, or hang."""
        if fault not in BACKEND_FAULTS:
            raise BadConfig(f"unknown backend fault {fault!r}; known: {list(BACKEND_FAULTS)}")
        self.backend_fault = fault
        return {"fault": fault}

    def describe(self) -> list[dict[str, Any]]:
        """Every container's description, in the order they were added."""
        return [c.describe() for c in self.containers.values()]
