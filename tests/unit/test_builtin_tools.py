"""builtin_tools: a tool is offered only when configured; run_code's precedence; the tools' settings."""

from __future__ import annotations

import json

import pytest

from llmpool.errors import ConfigError
from llmpool.settings import config_issues, load_settings
from llmpool.tools import builtin_tools
from llmpool.tools.e2b import E2BRunCode
from llmpool.tools.local_code import LocalRunCode
from llmpool.tools.web_search import WebSearch


def test_nothing_configured_offers_nothing() -> None:
    assert builtin_tools(load_settings()) == {}


def test_a_tool_whose_key_is_missing_is_not_offered() -> None:
    assert list(builtin_tools(load_settings(tavily_api_key="t"))) == ["web_search"]
    assert list(builtin_tools(load_settings(e2b_api_key="e"))) == ["run_code"]
    # docker-compose's `VAR=` is not a key.
    assert builtin_tools(load_settings(tavily_api_key=" ", e2b_api_key="")) == {}


def test_local_execution_only_when_turned_on_and_e2b_wins() -> None:
    assert builtin_tools(load_settings(agent_local_code_execution=False)) == {}
    local = builtin_tools(load_settings(agent_local_code_execution=True))["run_code"]
    assert isinstance(local, LocalRunCode)
    both = builtin_tools(load_settings(agent_local_code_execution=True, e2b_api_key="e"))["run_code"]
    assert isinstance(both, E2BRunCode)


def test_timeouts_limits_and_schemas_come_from_the_settings() -> None:
    tools = builtin_tools(load_settings(
        tavily_api_key="t", agent_tool_timeout=12, agent_web_search_timeout=4, agent_local_code_execution=True,
        agent_local_code_cpu_seconds=3, agent_local_code_memory_mb=128, agent_local_code_max_processes=2))
    search, code = tools["web_search"], tools["run_code"]
    assert isinstance(search, WebSearch) and isinstance(code, LocalRunCode)
    assert (search.timeout, code.timeout) == (4, 12)
    assert (code.limits.cpu_seconds, code.limits.memory_bytes, code.limits.max_processes) == (3, 128 * 2**20, 2)
    for name, tool in tools.items():
        schema = tool.schema()
        assert schema["type"] == "function" and schema["function"]["name"] == name == tool.name
        json.dumps(schema)  # plain JSON, as it goes to the LLM


def test_tool_keys_are_secrets() -> None:
    settings = load_settings(tavily_api_key="tvly-abc", e2b_api_key="e2b_abc")
    shown = json.dumps(settings.redacted())
    assert "tvly-abc" not in shown and "e2b_abc" not in shown
    assert "tvly-abc" not in repr(builtin_tools(settings))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("agent_tavily_url", "api.tavily.com", "AGENT_TAVILY_URL"),
    ("e2b_api_url", "localhost:3000", "E2B_API_URL"),
    ("agent_web_search_max_results", 21, "AGENT_WEB_SEARCH_MAX_RESULTS"),
    ("agent_local_code_memory_mb", 1, "AGENT_LOCAL_CODE_MEMORY_MB"),
    ("agent_tool_timeout", 0, "AGENT_TOOL_TIMEOUT"),
])
def test_bad_tool_settings_name_their_variable(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**{field: value})


def test_tools_are_built_once_per_settings() -> None:
    # A worker asks for them on every job: each holds a pooled HTTP client, not to be rebuilt each time.
    settings = load_settings(tavily_api_key="t", e2b_api_key="e")
    first, again = builtin_tools(settings), builtin_tools(settings)
    assert first is not again  # the caller's own dict
    assert all(first[name] is again[name] for name in first)
    other = builtin_tools(load_settings(tavily_api_key="t", e2b_api_key="e"))
    assert other["web_search"] is not first["web_search"]


def test_local_execution_is_warned_about_at_start() -> None:
    warning = "WARNING: AGENT_LOCAL_CODE_EXECUTION is on"
    assert not any(i.startswith(warning) for i in config_issues(load_settings()))
    assert any(i.startswith(warning) for i in config_issues(load_settings(agent_local_code_execution=True)))
    # With E2B configured the host runs nothing: no warning.
    assert not any(i.startswith(warning) for i in config_issues(
        load_settings(agent_local_code_execution=True, e2b_api_key="e")))
