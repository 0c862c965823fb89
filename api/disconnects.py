"""A client that disconnects frees what its request held at once; its job goes on.

While a route waits (for a job's first event, or its end), nothing reads the ASGI channel, so a
client that hangs up goes unnoticed until the wait ends: `unless_disconnected` watches for
`http.disconnect` beside the wait and cancels it. A streamed answer is watched by Starlette itself
(with ASGI http spec < 2.4, which uvicorn reports, it cancels the body iterator on disconnect);
`FollowingStream` closes the stream's waiter however the response ends, even when its body never
started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.stream_hub import StreamHub, Waiter

__all__ = ["ClientGone", "unless_disconnected", "FollowingStream", "gone_response", "answer_waiting"]

T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499  # nginx's name for it; only the access log sees it


class ClientGone(Exception):
    """The HTTP client disconnected while its request waited."""


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the request body was read already, so nothing else comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, waiting: Awaitable[T]) -> T:
    """What `waiting` returns, or ClientGone (with `waiting` cancelled) if the client leaves first."""
    work: asyncio.Future[T] = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, gone):
            task.cancel()
        await asyncio.gather(work, gone, return_exceptions=True)
    if work.done() and not work.cancelled():
        return work.result()  # raises what the wait raised
    raise ClientGone()


def gone_response() -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)


class FollowingStream(StreamingResponse):
    """A streamed answer that closes its waiter when the response ends, whatever ends it."""

    def __init__(self, waiter: Waiter, content: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.waiter = waiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.waiter.close()


async def answer_waiting(hub: StreamHub, answer: Callable[[Waiter], Awaitable[Response]]) -> Response:
    """`answer`, given a waiter of `hub` (503 overloaded before anything else when none is free).

    The waiter is closed when the answer is done, unless a streamed answer (`FollowingStream`) took
    it over; a client that hung up meanwhile gets `gone_response`.
    """
    waiter = hub.waiter()
    response: Response | None = None
    try:
        response = await answer(waiter)
        return response
    except ClientGone:
        return gone_response()
    finally:
        if not isinstance(response, FollowingStream):
            waiter.close()
