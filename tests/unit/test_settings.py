"""Settings: the TT-Studio defaults, bad values that stop start-up, and the issues report.

That a bad value stops the real processes (the CLI, a worker, the API): tests/integration/test_settings_processes.py.
"""

from __future__ import annotations

import pytest

from llmpool.errors import ConfigError
from llmpool.settings import DEFAULT_PRIORITY_MODELS, Settings, issues_report, load_settings
from tests.processes import OUR_VARS

TT_STUDIO_DEFAULTS = {
    "agent_auto_discovery": True, "agent_discovery_cache_ttl": 30, "agent_discovery_interval": 60,
    "agent_health_check_enabled": True, "agent_health_check_interval": 30,
    "agent_health_check_timeout": 5, "agent_max_failures": 3, "agent_fallback_to_local": True,
    "agent_fallback_to_cloud": False, "agent_backend_url": "http://tt-studio-backend-api:8000",
    "local_llm_host": "localhost", "local_llm_port": 7000, "local_model_name": "llama-3.1-70b",
    "use_cloud_llm": False, "agent_log_level": "INFO", "agent_debug_mode": False,
    "agent_llm_polling_enabled": True, "agent_llm_polling_interval": 180,
    "agent_llm_polling_max_attempts": 0, "jwt_secret": None, "cloud_chat_ui_auth_token": None,
    "llm_container_name": None, "cloud_chat_ui_url": None, "cloud_model_name": None,
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> pytest.MonkeyPatch:
    """An environment with no llmpool variable set and no .env file in the working directory."""
    for name in OUR_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults_are_the_tt_studio_agents(env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    for name, expected in TT_STUDIO_DEFAULTS.items():
        assert getattr(settings, name) == expected, name
    assert settings.agent_priority_models == DEFAULT_PRIORITY_MODELS


def test_env_values_are_read_and_lists_split_on_commas(env: pytest.MonkeyPatch) -> None:
    env.setenv("AGENT_PRIORITY_MODELS", " qwen-72b , llama-3.1-8b,,")
    env.setenv("AGENT_HEALTH_CHECK_INTERVAL", "12.5")
    env.setenv("agent_log_level", "debug")
    env.setenv("USE_CLOUD_LLM", "true")
    settings = load_settings()
    assert settings.agent_priority_models == ["qwen-72b", "llama-3.1-8b"]
    assert settings.agent_health_check_interval == 12.5
    assert settings.agent_log_level == "DEBUG"
    assert settings.use_cloud_llm is True


def test_dotenv_file_is_read(env: pytest.MonkeyPatch, tmp_path) -> None:
    (tmp_path / ".env").write_text("LOCAL_LLM_PORT=7123\n")
    assert load_settings().local_llm_port == 7123


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("AGENT_HEALTH_CHECK_INTERVAL", "abc", "valid number"),
        ("AGENT_HEALTH_CHECK_INTERVAL", "0", "greater than 0"),
        ("AGENT_LOG_LEVEL", "LOUD", "DEBUG"),
        ("AGENT_MAX_FAILURES", "0", "greater than or equal to 1"),
        ("LOCAL_LLM_PORT", "70000", "less than or equal to 65535"),
        ("USE_CLOUD_LLM", "maybe", "valid boolean"),
        ("REDIS_URL", "localhost:6379", "redis://"),
        ("AGENT_BACKEND_URL", "backend:8000", "http://"),
    ],
)
def test_bad_values_name_the_variable(env: pytest.MonkeyPatch, variable: str, value: str,
                                      fragment: str) -> None:
    env.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"Invalid value for {variable}:" in message
    assert fragment in message


def test_blank_optional_values_count_as_unset(env: pytest.MonkeyPatch) -> None:
    env.setenv("JWT_SECRET", "")
    env.setenv("LLM_CONTAINER_NAME", "  ")
    settings = load_settings()
    assert settings.jwt_secret is None and settings.llm_container_name is None


REPORT_CASES = [
    ({"jwt_secret": "s"}, []),
    ({}, ["WARNING: No authentication configured (neither JWT_SECRET nor CLOUD_CHAT_UI_AUTH_TOKEN)"]),
    ({"jwt_secret": "s", "use_cloud_llm": True, "cloud_chat_ui_url": "https://x/v1/chat/completions"},
     ["WARNING: Cloud LLM enabled but no CLOUD_CHAT_UI_AUTH_TOKEN provided"]),
    ({"cloud_chat_ui_auth_token": "t", "agent_health_check_interval": 5},
     ["WARNING: Health check interval too low (minimum 10 seconds)"]),
    ({"cloud_chat_ui_auth_token": "t", "agent_health_check_timeout": 0.5},
     ["WARNING: Health check timeout too low (minimum 1 second)"]),
    ({"cloud_chat_ui_auth_token": "t", "use_cloud_llm": True},
     ["WARNING: Cloud LLM enabled but no CLOUD_CHAT_UI_URL provided"]),
    ({"jwt_secret": "s", "agent_first_token_timeout": 3},
     ["WARNING: AGENT_FIRST_TOKEN_FLOOR is not below AGENT_FIRST_TOKEN_TIMEOUT "
      "(first-token timeouts cannot adapt to an endpoint's TTFT)"]),
    ({"jwt_secret": "s", "agent_api_jwt_secret": None},
     ["WARNING: The API is open: no AGENT_API_JWT_SECRET or AGENT_API_JWT_PUBLIC_KEY, so anyone who reaches it "
      "can pin models, reload the configuration and read any thread"]),
    ({"jwt_secret": "s", "agent_api_jwt_secret": "short"},
     ["WARNING: AGENT_API_JWT_SECRET is shorter than 32 characters (HS256 wants 256 bits)"]),
]
# The cases above configure the API's own auth unless they say otherwise (its absence is a warning).
API_SECRET = "a" * 32


@pytest.mark.parametrize(("values", "lines"), REPORT_CASES)
def test_issues_report_lists_only_what_holds(env: pytest.MonkeyPatch, values: dict,
                                             lines: list[str]) -> None:
    report = issues_report(Settings(**{"agent_api_jwt_secret": API_SECRET, **values}))
    if not lines:
        assert report == ""
        return
    assert report.splitlines() == ["=== CONFIGURATION ISSUES ===", *lines, "============================"]


def test_redacted_configuration_hides_secrets(env: pytest.MonkeyPatch) -> None:
    settings = Settings(jwt_secret="jwt-very-secret", cloud_chat_ui_auth_token="tok-very-secret")
    shown = repr(settings.redacted()) + repr(settings)
    assert "very-secret" not in shown
    assert settings.redacted()["jwt_secret"] == "***"
