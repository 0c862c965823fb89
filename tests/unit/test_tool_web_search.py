"""web_search against a mock Tavily over real HTTP: results, timeouts, HTTP errors, bad JSON, the cap, secrets."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from llmpool.dev.mock_tools import MockTools
from llmpool.tools import SUMMARY_MAX_CHARS
from llmpool.tools.web_search import MAX_QUERY_CHARS, WebSearch
from tests.unit.tool_servers import assert_no_secret, mock_tool_servers, mock_tools

__all__ = ["mock_tool_servers", "mock_tools"]  # fixtures, imported for pytest

KEY = "tvly-SECRET-test-key"
SLACK = 1.5  # seconds a timed-out run may take past its timeout (socket timers, a loaded CI machine)


def make_tool(mocks: MockTools, *, timeout: float = 5.0, max_results: int = 3, cap: int = 16384,
              key: str = KEY) -> WebSearch:
    return WebSearch(api_key=key, base_url=mocks.tavily_url, timeout=timeout, max_results=max_results,
                     max_result_bytes=cap)


def far() -> float:
    return time.time() + 60


def test_results_come_back_as_title_url_and_snippet(mock_tools: MockTools) -> None:
    result = make_tool(mock_tools).run({"query": "llama 3.1 release date"}, deadline=far())
    assert result.error is None
    assert "1. Result 1 about llama 3.1 release date" in result.content
    assert "URL: https://example.com/3" in result.content
    assert "Snippet 2: what the web says about llama 3.1 release date." in result.content
    assert "https://example.com/4" not in result.content  # max_results=3
    assert result.size == len(result.content.encode())
    assert result.summary == '3 results for "llama 3.1 release date"'
    assert result.duration > 0
    # Tavily's documented auth: the key in the Authorization header, never in the body.
    assert mock_tool_requests(mock_tools) == [{"query": "llama 3.1 release date", "max_results": 3}]
    assert mock_tools.tavily.auth == ["bearer"]


def mock_tool_requests(mocks: MockTools) -> list[dict[str, object]]:
    return [{k: body[k] for k in ("query", "max_results", "api_key") if k in body} for body in mocks.tavily.requests]


def test_no_results_is_an_answer_not_an_error(mock_tools: MockTools) -> None:
    mock_tools.tavily.results = []
    result = make_tool(mock_tools).run({"query": "nothing at all"}, deadline=far())
    assert (result.error, result.content) == (None, "No results.")


@pytest.mark.parametrize("arguments", [{}, {"query": ""}, {"query": "   "}, {"query": 5}, {"query": None},
                                       {"query": "x" * (MAX_QUERY_CHARS + 1)}, ["query"]])
def test_bad_arguments_never_reach_tavily(mock_tools: MockTools, arguments: object) -> None:
    result = make_tool(mock_tools).run(arguments, deadline=far())  # type: ignore[arg-type]
    assert result.error == "bad_arguments"
    assert result.content.startswith("`query` ")
    assert mock_tools.tavily.requests == []


def test_a_hanging_tavily_is_cut_at_the_tool_timeout(mock_tools: MockTools) -> None:
    mock_tools.tavily.fault = "hang"
    started = time.monotonic()
    result = make_tool(mock_tools, timeout=1.0).run({"query": "q"}, deadline=far())
    took = time.monotonic() - started
    assert result.error == "timeout"
    assert 1.0 <= took < 1.0 + SLACK
    assert "did not answer within 1.0s" in result.content


def test_the_jobs_deadline_cuts_sooner_than_the_tool_timeout(mock_tools: MockTools) -> None:
    mock_tools.tavily.fault = "hang"
    started = time.monotonic()
    result = make_tool(mock_tools, timeout=30.0).run({"query": "q"}, deadline=time.time() + 0.7)
    assert result.error == "timeout"
    assert time.monotonic() - started < 0.7 + SLACK


def test_a_spent_deadline_sends_nothing(mock_tools: MockTools) -> None:
    result = make_tool(mock_tools).run({"query": "q"}, deadline=time.time() - 1)
    assert result.error == "timeout"
    assert mock_tools.tavily.requests == []


def test_a_slow_answer_within_the_timeout_is_used(mock_tools: MockTools) -> None:
    mock_tools.tavily.fault, mock_tools.tavily.delay = "slow", 0.3
    result = make_tool(mock_tools, timeout=5.0).run({"query": "q"}, deadline=far())
    assert result.error is None and result.duration >= 0.3


@pytest.mark.parametrize(("fault", "error", "shown"), [
    ("500", "http_error", "HTTP 500: Internal Server Error"),
    ("401", "http_error", "HTTP 401"),
    ("bad_json", "bad_response", "not the expected JSON"),
])
def test_server_failures_are_named_tool_errors(mock_tools: MockTools, fault: str, error: str, shown: str) -> None:
    mock_tools.tavily.fault = fault
    result = make_tool(mock_tools).run({"query": "q"}, deadline=far())
    assert result.error == error
    assert shown in result.content
    assert len(result.summary) <= SUMMARY_MAX_CHARS


def test_a_wrong_shape_is_a_bad_response(mock_tools: MockTools) -> None:
    mock_tools.tavily.results = [{"title": "no url here"}]
    result = make_tool(mock_tools).run({"query": "q"}, deadline=far())
    assert result.error == "bad_response"


def test_an_unreachable_tavily_is_an_http_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tool = WebSearch(api_key=KEY, base_url=f"http://127.0.0.1:{port}", timeout=2, max_results=3,
                     max_result_bytes=4096)
    result = tool.run({"query": "q"}, deadline=far())
    assert result.error == "http_error"
    assert "cannot reach Tavily (ConnectError)" in result.content


def test_the_result_is_capped_and_its_full_size_recorded(mock_tools: MockTools) -> None:
    mock_tools.tavily.results = [{"title": f"t{n}", "url": f"https://e.com/{n}", "content": "é" * 900}
                                 for n in range(10)]
    result = make_tool(mock_tools, max_results=10, cap=1024).run({"query": "q"}, deadline=far())
    assert result.error is None
    assert len(result.content.encode()) <= 1024
    assert result.size > 10 * 900
    assert result.content.endswith(f"[... truncated: {result.size} bytes in all]")


def test_the_key_is_in_no_result_and_no_log_line(mock_tools: MockTools, caplog: pytest.LogCaptureFixture) -> None:
    # A server that echoes the key back (in a result, in a 401) must not get it into the LLM's hands.
    mock_tools.tavily.results = [{"title": f"your key is {KEY}", "url": "https://e.com", "content": KEY}]
    results = []
    with caplog.at_level(logging.DEBUG):
        results.append(make_tool(mock_tools).run({"query": "q"}, deadline=far()))
        for fault in ("401", "500", "bad_json", "hang"):
            mock_tools.tavily.fault = fault
            results.append(make_tool(mock_tools, timeout=0.5).run({"query": "q"}, deadline=far()))
        results.append(make_tool(mock_tools, key="wrong-key").run({"query": "q"}, deadline=far()))
    assert "your key is ***" in results[0].content
    assert [r.error for r in results] == [None, "http_error", "http_error", "bad_response", "timeout", "http_error"]
    assert_no_secret([KEY], results, caplog.records)
    assert KEY not in repr(make_tool(mock_tools))
