"""web_search: Tavily's search API (`POST {AGENT_TAVILY_URL}/search`), results as title, URL and snippet.

The key goes in `Authorization: Bearer` as Tavily documents today (never in the body, so no request
dump can show it). Every failure (bad arguments, timeout, HTTP status, bad JSON) is a ToolResult
with `error` set, for the LLM to read; nothing here raises for a remote failure.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx

from llmpool.http_deadline import call_deadline, make_bounded_client
from llmpool.tools import ToolResult
from llmpool.tools.results import failed, finished, one_line, scrub, time_left

__all__ = ["WebSearch", "MAX_QUERY_CHARS"]

log = logging.getLogger("llmpool.tools.web_search")

MAX_QUERY_CHARS = 400  # Tavily refuses longer queries ("Query is too long. Max query length is 400 characters.")
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # read no more than this of Tavily's answer, whatever the result cap
SNIPPET_CHARS = 1000  # of one result's content


class WebSearch:
    """The web_search tool over one Tavily endpoint and key."""

    name = "web_search"

    def __init__(self, *, api_key: str, base_url: str, timeout: float, max_results: int,
                 max_result_bytes: int, client: httpx.Client | None = None) -> None:
        self.timeout = timeout
        self._api_key = api_key
        self._url = base_url.rstrip("/") + "/search"
        self._max_results = max_results
        self._max_bytes = max_result_bytes
        self._client = client or make_bounded_client(max_connections=32, timeout=timeout)

    def __repr__(self) -> str:  # never the key
        return f"WebSearch(url={self._url!r}, timeout={self.timeout})"

    def schema(self) -> dict[str, Any]:
        return {"type": "function", "function": {
            "name": self.name,
            "description": "Search the web for current information. Returns the top results, each with "
                           "its title, URL and a snippet of its text.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to search for, in a few words",
                                         "minLength": 1, "maxLength": MAX_QUERY_CHARS}},
                "required": ["query"],
            },
        }}

    def run(self, arguments: dict[str, Any], *, deadline: float) -> ToolResult:
        started = time.monotonic()
        query = arguments.get("query") if isinstance(arguments, dict) else None
        if not isinstance(query, str) or not query.strip():
            return failed("bad_arguments", "`query` must be a non-empty string", started=started,
                          max_bytes=self._max_bytes)
        query = query.strip()
        if len(query) > MAX_QUERY_CHARS:
            return failed("bad_arguments", f"`query` is longer than {MAX_QUERY_CHARS} characters",
                          started=started, max_bytes=self._max_bytes)
        left = time_left(self.timeout, deadline)
        if left <= 0:
            return failed("timeout", "no time left before the job's deadline", started=started,
                          max_bytes=self._max_bytes)
        result = self._search(query, left, started)
        log.info("web_search: %s in %.2fs (%d bytes)", result.error or "ok", result.duration, result.size)
        return result

    def _search(self, query: str, left: float, started: float) -> ToolResult:
        body = {"query": query, "max_results": self._max_results, "search_depth": "basic",
                "include_answer": False, "include_raw_content": False, "include_images": False}
        headers = {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"}
        try:
            with call_deadline(left), self._client.stream("POST", self._url, json=body, headers=headers,
                                                           timeout=left) as response:
                raw = _read_capped(response, MAX_RESPONSE_BYTES)
        except httpx.TimeoutException:
            return failed("timeout", f"Tavily did not answer within {left:.1f}s", started=started,
                          max_bytes=self._max_bytes)
        except _TooLarge:
            return failed("bad_response", f"Tavily's answer is larger than {MAX_RESPONSE_BYTES} bytes",
                          started=started, max_bytes=self._max_bytes)
        except httpx.HTTPError as exc:
            # The exception's class only: its text may name the URL, never needed by the LLM.
            return failed("http_error", f"cannot reach Tavily ({type(exc).__name__})", started=started,
                          max_bytes=self._max_bytes)
        if response.status_code != 200:
            detail = scrub(one_line(raw.decode("utf-8", errors="replace"), 200), [self._api_key])
            return failed("http_error", f"Tavily answered HTTP {response.status_code}: {detail}",
                          started=started, max_bytes=self._max_bytes)
        try:
            results = _parse_results(json.loads(raw))
        except (ValueError, TypeError) as exc:
            return failed("bad_response", f"Tavily's answer is not the expected JSON ({exc})",
                          started=started, max_bytes=self._max_bytes)
        content = scrub(_render(results), [self._api_key])
        return finished(content, started=started, max_bytes=self._max_bytes,
                        summary=f'{len(results)} results for "{one_line(query, 80)}"')


class _TooLarge(Exception):
    pass


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_results(data: Any) -> list[dict[str, str]]:
    """Tavily's `results` as title/url/snippet strings; a ValueError for any other shape."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError("no `results` list")
    results = []
    for item in data["results"]:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise ValueError("a result without a `url`")
        title, content = item.get("title"), item.get("content")
        results.append({"title": title if isinstance(title, str) else "",
                        "url": item["url"],
                        "snippet": content if isinstance(content, str) else ""})
    return results


def _render(results: list[dict[str, str]]) -> str:
    if not results:
        return "No results."
    lines = []
    for number, item in enumerate(results, 1):
        lines.append(f"{number}. {one_line(item['title'], 300) or '(no title)'}\n   URL: {item['url']}\n"
                     f"   {one_line(item['snippet'], SNIPPET_CHARS)}")
    return "\n".join(lines)
