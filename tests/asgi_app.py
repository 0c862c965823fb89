"""The real ASGI app in this process (its lifespan run, so it holds real Redis clients), driven
through httpx's ASGI transport: for tests of the HTTP layer that need no worker or uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from api.app import create_app

__all__ = ["Scenario", "run_against_app"]

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def run_against_app(scenario: Scenario) -> None:
    """Build the app from the current settings, start it, and run `scenario` with a client of it."""
    async def main() -> None:
        app = create_app()
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                await scenario(client)

    asyncio.run(main())
