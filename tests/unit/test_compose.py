"""docker-compose.yml: the structure production relies on, and that docker-compose accepts it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmpool.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
LLMPOOL_SERVICES = ("worker", "beat", "api", "flower")
QUEUES = "control,chat.high,chat.default,chat.low"
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|KEY", re.IGNORECASE)
# The TT-Studio agent's variables (Settings lists them first, before REDIS_URL): all pass through.
_FIELDS = list(Settings.model_fields)
TT_STUDIO_VARIABLES = [name.upper() for name in _FIELDS[: _FIELDS.index("redis_url")]]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def argv(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def test_the_services(compose: dict[str, Any]):
    assert set(compose["services"]) == {"redis", *LLMPOOL_SERVICES, "mock-llm"}


def test_redis_is_durable_and_never_evicts(compose: dict[str, Any]):
    redis = compose["services"]["redis"]
    command = argv(redis)
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["volumes"] and redis["volumes"][0].endswith(":/data")
    assert "redis-cli" in redis["healthcheck"]["test"]


@pytest.mark.parametrize("name", ["redis", "worker", "api", "flower", "mock-llm"])
def test_every_service_but_beat_has_a_healthcheck(compose: dict[str, Any], name: str):
    assert compose["services"][name]["healthcheck"]["test"]


def test_worker_consumes_the_four_queues_in_priority_order(compose: dict[str, Any]):
    command = argv(compose["services"]["worker"])
    assert command[:4] == ["celery", "-A", "workers", "worker"]
    assert command[command.index("-Q") + 1] == QUEUES
    assert "-E" in command  # Flower needs the task events
    node = command[command.index("-n") + 1]
    assert node == "worker@%h"
    assert "worker@$$HOSTNAME" in " ".join(compose["services"]["worker"]["healthcheck"]["test"])


@pytest.mark.parametrize("name", LLMPOOL_SERVICES)
def test_llmpool_services_share_redis_and_settings(compose: dict[str, Any], name: str):
    service = compose["services"][name]
    env = service["environment"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["restart"] == "unless-stopped"
    assert service["build"] == "." and "profiles" not in service
    missing = [var for var in TT_STUDIO_VARIABLES if var not in env]
    assert not missing
    for var in TT_STUDIO_VARIABLES:  # passed through from the shell or .env, not fixed here
        assert str(env[var]).startswith(f"${{{var}"), var


def test_ports(compose: dict[str, Any]):
    services = compose["services"]
    assert "8080:8080" in services["api"]["ports"]
    assert any(str(p).endswith("5555:5555") for p in services["flower"]["ports"])
    assert "ports" not in services["redis"]  # Redis stays on the compose network


def test_mock_llm_only_in_the_demo_profile(compose: dict[str, Any]):
    services = compose["services"]
    assert services["mock-llm"]["profiles"] == ["demo"]
    assert all("profiles" not in s for n, s in services.items() if n != "mock-llm")
    command = argv(services["mock-llm"])
    assert command[:2] == ["llmpool", "mock-llm"]
    assert command[command.index("--port") + 1] == "7000"
    assert command[command.index("--control-port") + 1] == "7100"
    assert "LOCAL_LLM_HOST=mock-llm" in COMPOSE.read_text()  # the documented way to use it


def test_no_secret_value_is_hard_coded(compose: dict[str, Any]):
    for name, service in compose["services"].items():
        for var, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(var):
                assert value in (f"${{{var}:-}}", f"${{{var}}}"), f"{name}: {var}"
        assert "@" not in str(service.get("environment", {}).get("REDIS_URL", "")), name


def test_the_image_runs_as_non_root():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


@pytest.mark.parametrize("profile", [[], ["--profile", "demo"]])
def test_docker_compose_accepts_it(profile: list[str]):
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is missing under CI (.ci/run installs it)")
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), *profile, "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
