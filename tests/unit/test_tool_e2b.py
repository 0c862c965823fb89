"""run_code in E2B against a mock E2B over real HTTP (scripted interpreter output: no process here):
sandbox created, executed and always killed; timeouts; HTTP, sandbox and stream errors; the cap; secrets."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import pytest

from llmpool.dev.mock_tools import MockTools
from llmpool.tools import SUMMARY_MAX_CHARS
from llmpool.tools.e2b import SANDBOX_TTL_MARGIN, E2BRunCode
from tests.unit.tool_servers import assert_no_secret, mock_tool_servers, mock_tools

__all__ = ["mock_tool_servers", "mock_tools"]  # fixtures, imported for pytest

KEY = "e2b_SECRET_test_key"
SLACK = 1.5  # the kill after a timeout, thread and socket timers on a loaded 2-core CI machine
CODE = "print('hi')\n6 * 7"
EVENTS: list[dict[str, Any]] = [
    {"type": "stdout", "text": "hi\n", "timestamp": 1},
    {"type": "result", "text": "42", "is_main_result": True},
    {"type": "number_of_executions", "execution_count": 1},
    {"type": "end_of_execution"},
]


def make_tool(mocks: MockTools, *, timeout: float = 5.0, cap: int = 16384, key: str = KEY) -> E2BRunCode:
    # E2B_API_URL and E2B_SANDBOX_URL both at the mock, as for a self-hosted E2B.
    return E2BRunCode(api_key=key, domain="e2b.app", api_url=mocks.e2b_url, sandbox_url=mocks.e2b_url,
                      template="code-interpreter-v1", timeout=timeout, max_result_bytes=cap)


def far() -> float:
    return time.time() + 60


def test_code_runs_in_a_sandbox_that_is_killed_after(mock_tools: MockTools) -> None:
    mock_tools.e2b.outputs[CODE] = EVENTS
    result = make_tool(mock_tools, timeout=4.2).run({"code": CODE}, deadline=far())
    assert result.error is None
    assert result.content == "stdout:\nhi\nresult:\n42"
    assert result.summary == "ok: stdout 3 bytes, result 42"
    assert mock_tools.e2b.executions == [CODE]
    assert (mock_tools.e2b.created, mock_tools.e2b.killed, mock_tools.e2b.live()) == (1, 1, [])
    # Created with a timeout just past the run's, so a crashed worker leaks it for seconds only.
    assert mock_tools.e2b.timeouts == [math.ceil(4.2) + SANDBOX_TTL_MARGIN]


def test_an_exception_in_the_code_goes_back_to_the_llm(mock_tools: MockTools) -> None:
    # As Jupyter sends it: ANSI-coloured.
    traceback = "\n".join(f"frame {n}" for n in range(30)) + "\n\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"
    mock_tools.e2b.outputs["1/0"] = [{"type": "error", "name": "ZeroDivisionError", "value": "division by zero",
                                      "traceback": traceback}, {"type": "end_of_execution"}]
    result = make_tool(mock_tools).run({"code": "1/0"}, deadline=far())
    assert result.error == "code_error"
    assert "error: ZeroDivisionError: division by zero" in result.content
    assert "frame 29" in result.content and "frame 3\n" not in result.content  # the tail of the traceback
    assert "\nZeroDivisionError: division by zero" in result.content and "\x1b" not in result.content
    assert result.summary == "ZeroDivisionError: division by zero"
    assert mock_tools.e2b.live() == []


def test_a_display_without_text_is_named(mock_tools: MockTools) -> None:
    mock_tools.e2b.outputs["plot()"] = [{"type": "result", "png": "iVBOR...", "is_main_result": False},
                                        {"type": "end_of_execution"}]
    result = make_tool(mock_tools).run({"code": "plot()"}, deadline=far())
    assert result.content == "result:\n(a display without text: png)"


@pytest.mark.parametrize("arguments", [{}, {"code": ""}, {"code": "  \n"}, {"code": 1}, {"code": "x" * 100_001}])
def test_bad_arguments_create_no_sandbox(mock_tools: MockTools, arguments: dict[str, Any]) -> None:
    result = make_tool(mock_tools).run(arguments, deadline=far())
    assert result.error == "bad_arguments"
    assert mock_tools.e2b.created == 0


def test_a_hanging_execution_is_cut_at_the_timeout_and_its_sandbox_killed(mock_tools: MockTools) -> None:
    mock_tools.e2b.fault = "hang"
    started = time.monotonic()
    result = make_tool(mock_tools, timeout=1.0).run({"code": "while True: pass"}, deadline=far())
    assert result.error == "timeout"
    assert 1.0 <= time.monotonic() - started < 1.0 + SLACK
    assert "stopped: timeout" in result.content
    assert (mock_tools.e2b.killed, mock_tools.e2b.live()) == (1, [])


def test_the_jobs_deadline_cuts_sooner_than_the_tool_timeout(mock_tools: MockTools) -> None:
    mock_tools.e2b.fault = "hang"
    started = time.monotonic()
    result = make_tool(mock_tools, timeout=30).run({"code": "x"}, deadline=time.time() + 0.7)
    assert result.error == "timeout"
    assert time.monotonic() - started < 0.7 + SLACK
    assert mock_tools.e2b.live() == []


@pytest.mark.parametrize(("fault", "error", "shown"), [
    ("create_500", "http_error", "E2B refused to create a sandbox: HTTP 500"),
    ("execute_500", "sandbox_error", "the sandbox answered HTTP 500: kernel died"),
    ("bad_json", "bad_response", "a line that is not JSON"),
    ("cut", "sandbox_error", "without end_of_execution"),
])
def test_failures_are_named_and_leave_no_sandbox(mock_tools: MockTools, fault: str, error: str, shown: str) -> None:
    mock_tools.e2b.fault = fault
    mock_tools.e2b.outputs[CODE] = EVENTS
    result = make_tool(mock_tools).run({"code": CODE}, deadline=far())
    assert result.error == error
    assert shown in result.content
    assert len(result.summary) <= SUMMARY_MAX_CHARS
    assert mock_tools.e2b.live() == []


def test_a_failed_kill_is_logged_and_the_sandbox_ends_at_its_timeout(
        mock_tools: MockTools, caplog: pytest.LogCaptureFixture) -> None:
    mock_tools.e2b.fault = "kill_500"
    mock_tools.e2b.outputs[CODE] = EVENTS
    with caplog.at_level(logging.WARNING, logger="llmpool.tools.run_code"):
        result = make_tool(mock_tools, timeout=2).run({"code": CODE}, deadline=far())
    assert result.error is None  # the run itself worked
    assert "answered HTTP 500; it ends at its timeout" in caplog.text
    assert mock_tools.e2b.timeouts == [2 + SANDBOX_TTL_MARGIN]


def test_the_output_is_capped_and_its_full_size_recorded(mock_tools: MockTools) -> None:
    mock_tools.e2b.outputs["spam()"] = [{"type": "stdout", "text": "x" * 50_000, "timestamp": 1},
                                        {"type": "end_of_execution"}]
    result = make_tool(mock_tools, cap=1024).run({"code": "spam()"}, deadline=far())
    assert len(result.content.encode()) <= 1024
    assert result.size >= 50_000
    assert result.content.endswith(f"[... truncated: {result.size} bytes in all]")


def test_the_jupyter_url_follows_e2b_domain_unless_overridden() -> None:
    tool = E2BRunCode(api_key=KEY, domain="e2b.example.org", api_url=None, sandbox_url=None,
                      template="code-interpreter-v1", timeout=5, max_result_bytes=1024)
    assert repr(tool) == "E2BRunCode(api='https://api.e2b.example.org', template='code-interpreter-v1', timeout=5)"
    assert tool._jupyter_url({"sandboxID": "abc"}) == "https://49999-abc.e2b.example.org"
    # The API may place a sandbox under a domain of its own, as the SDK honours.
    assert tool._jupyter_url({"sandboxID": "abc", "domain": "eu.e2b.dev"}) == "https://49999-abc.eu.e2b.dev"


def test_no_key_or_token_in_results_or_logs(mock_tools: MockTools, caplog: pytest.LogCaptureFixture) -> None:
    results = []
    with caplog.at_level(logging.DEBUG):
        mock_tools.e2b.outputs[CODE] = EVENTS
        results.append(make_tool(mock_tools).run({"code": CODE}, deadline=far()))
        results.append(make_tool(mock_tools, key="wrong").run({"code": CODE}, deadline=far()))
        for fault in ("create_500", "execute_500", "bad_json", "hang", "kill_500"):
            mock_tools.e2b.fault = fault
            results.append(make_tool(mock_tools, timeout=0.5).run({"code": CODE}, deadline=far()))
    assert [r.error for r in results] == [None, "http_error", "http_error", "sandbox_error", "bad_response",
                                          "timeout", None]
    assert "HTTP 401" in results[1].content
    tokens = [box.token for box in mock_tools.e2b.sandboxes.values()]  # the one kill_500 left
    assert tokens
    assert_no_secret([KEY, *tokens], results, caplog.records)
