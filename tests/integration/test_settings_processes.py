"""A bad setting stops the real processes at start-up, with the variable named and no traceback.

The settings themselves (defaults, parsing, the issues report) are in tests/unit/test_settings.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.processes import clean_env


def test_cli_check_config_prints_report_and_bad_values_exit_2(tmp_path) -> None:
    ok = subprocess.run([sys.executable, "-m", "llmpool.cli", "check-config"], cwd=tmp_path,
                        env=clean_env(), capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0
    assert ok.stdout.startswith("=== CONFIGURATION ISSUES ===\nWARNING: No authentication configured")
    bad = subprocess.run([sys.executable, "-m", "llmpool.cli", "check-config"], cwd=tmp_path,
                         env=clean_env(agent_health_check_interval="abc"), capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2
    assert "Invalid value for AGENT_HEALTH_CHECK_INTERVAL" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "argv",
    [["-m", "celery", "-A", "workers", "worker", "--pool", "solo"],
     ["-m", "uvicorn", "api.app:app", "--port", "0"]],
    ids=["worker", "api"],
)
def test_processes_refuse_to_start_on_a_bad_value(tmp_path, argv: list[str]) -> None:
    run = subprocess.run([sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env=clean_env(agent_log_level="LOUD", redis_url="redis://127.0.0.1:1/0"))
    assert run.returncode != 0
    assert "llmpool: configuration error\nInvalid value for AGENT_LOG_LEVEL" in run.stderr
