"""The mock Tavily and E2B servers (threads, real HTTP on free ports) for the built-in tools' tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from llmpool.dev.mock_tools import MockE2B, MockTavily, MockTools
from llmpool.tools import ToolResult

__all__ = ["mock_tool_servers", "mock_tools", "assert_no_secret"]


@pytest.fixture(scope="module")
def mock_tool_servers() -> Iterator[MockTools]:
    """One pair of servers per test module; stopped however the module ends."""
    with MockTools(tavily=MockTavily(api_key="tvly-SECRET-test-key"),
                   e2b=MockE2B(api_key="e2b_SECRET_test_key")) as mocks:
        yield mocks


@pytest.fixture
def mock_tools(mock_tool_servers: MockTools) -> MockTools:
    """The servers with clean scripts and counters for this test."""
    mock_tool_servers.reset()
    return mock_tool_servers


def assert_no_secret(secrets: list[str], results: list[ToolResult], records: list[logging.LogRecord]) -> None:
    """No secret in any field of any result, nor in any log line (message or exception text)."""
    assert records or results, "nothing to check: the test logged and returned nothing"
    for secret in secrets:
        for result in results:
            assert secret not in repr(result)
        for record in records:
            text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
            assert secret not in text
