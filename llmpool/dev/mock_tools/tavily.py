"""A mock of Tavily's `POST /search`: checks the key, answers scripted results, and misbehaves on demand.

Faults (`fault`): "slow" (answers after `delay` seconds), "hang" (never answers), "500", "bad_json",
"401" (refuses even the right key). `requests` records every body received (any `api_key` in it
replaced) and `auth` how each request carried its key ("bearer", "body" or "none").
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["MockTavily", "TAVILY_FAULTS"]

TAVILY_FAULTS = (None, "slow", "hang", "500", "bad_json", "401")
MAX_QUERY_CHARS = 400


@dataclass
class MockTavily:
    """The mock's script and what it saw; change the fields at any time from the test's thread."""

    api_key: str = "tvly-mock-key"
    results: list[dict[str, Any]] | None = None  # None: made up from the query
    fault: str | None = None
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    stopping: bool = False

    def reset(self) -> None:
        """Back to answering made-up results, with nothing recorded."""
        self.results, self.fault, self.delay = None, None, 0.0
        self.requests.clear()
        self.auth.clear()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/search", self._search, methods=["POST"])])

    def _results_for(self, query: str, count: int) -> list[dict[str, Any]]:
        if self.results is not None:
            return self.results[:count]
        return [{"title": f"Result {n} about {query}", "url": f"https://example.com/{n}",
                 "content": f"Snippet {n}: what the web says about {query}.", "score": 1 - n / 100,
                 "raw_content": None} for n in range(1, count + 1)]

    async def _search(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"detail": {"error": "Invalid JSON body"}}, status_code=400)
        refusal = self._refusal(request, body)
        if refusal is not None:
            return refusal
        if self.fault == "hang":
            while not self.stopping and not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return Response(status_code=504)
        if self.fault == "slow":
            await asyncio.sleep(self.delay)
        if self.fault == "500":
            return Response("Internal Server Error", status_code=500)
        if self.fault == "bad_json":
            return Response('{"results": [{"title": "cut', media_type="application/json")
        count = body.get("max_results", 5)
        count = count if isinstance(count, int) and 0 <= count <= 20 else 5
        return JSONResponse({"query": body["query"], "follow_up_questions": None, "answer": None, "images": [],
                             "results": self._results_for(body["query"], count), "response_time": 0.01})

    def _refusal(self, request: Request, body: dict[str, Any]) -> Response | None:
        """Tavily's 401 for a bad key, 400 for a bad query; records how the key came."""
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            key, how = header[len("Bearer "):], "bearer"
        elif "api_key" in body:
            key, how = body["api_key"], "body"
        else:
            key, how = None, "none"
        self.auth.append(how)
        self.requests.append({k: ("***" if k == "api_key" else v) for k, v in body.items()})
        if key != self.api_key or self.fault == "401":
            return JSONResponse({"detail": {"error": "Unauthorized: missing or invalid API key."}}, status_code=401)
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            return JSONResponse({"detail": {"error": "Query is missing."}}, status_code=400)
        if len(query) > MAX_QUERY_CHARS:
            return JSONResponse({"detail": {"error": "Query is too long. Max query length is 400 characters."}},
                                status_code=400)
        return None
