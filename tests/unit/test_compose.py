"""docker-compose.yml and the image: the structure production relies on, and what it means to llmpool.

Beyond the structure: every variable compose passes is a setting llmpool reads, its defaults are
llmpool's own defaults once parsed, the worker consumes the queues the code routes to, and the
image installs every program a service runs. That each command starts and passes its healthcheck
(and that docker-compose accepts the file) is tests/integration/test_compose.py.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from llmpool.schemas import QUEUES as CODE_QUEUES
from llmpool.settings import Settings, load_settings
from tests.processes import OUR_VARS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
LLMPOOL_SERVICES = ("worker", "control", "beat", "api", "flower")
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
HA_SERVICES = ("redis-replica", *SENTINELS)
MONITORING_SERVICES = ("prometheus", "grafana")
SENTINEL_URL = "sentinel://sentinel-1:26379;sentinel://sentinel-2:26379;sentinel://sentinel-3:26379"
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
    assert set(compose["services"]) == {"redis", *LLMPOOL_SERVICES, "mock-llm", *HA_SERVICES, *MONITORING_SERVICES}


def test_redis_is_durable_and_never_evicts(compose: dict[str, Any]):
    redis = compose["services"]["redis"]
    command = argv(redis)
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--maxmemory") + 1] == "${AGENT_REDIS_MAXMEMORY:-1gb}"
    assert Settings.model_fields["agent_redis_maxmemory"].default == "1gb"
    assert redis["volumes"] and redis["volumes"][0].endswith(":/data")
    assert "redis-cli" in redis["healthcheck"]["test"]


@pytest.mark.parametrize("name", ["redis", "worker", "control", "api", "flower", "mock-llm", *HA_SERVICES,
                                  *MONITORING_SERVICES])
def test_every_service_but_beat_has_a_healthcheck(compose: dict[str, Any], name: str):
    assert compose["services"][name]["healthcheck"]["test"]


def test_worker_consumes_the_four_queues_in_priority_order(compose: dict[str, Any]):
    command = argv(compose["services"]["worker"])
    assert command[:4] == ["celery", "-A", "workers", "worker"]
    assert command[command.index("-Q") + 1] == QUEUES == ",".join(CODE_QUEUES)  # every queue the code routes to
    assert "-E" in command  # Flower needs the task events
    node = command[command.index("-n") + 1]
    assert node == "worker@%h"
    assert "worker@$$HOSTNAME" in " ".join(compose["services"]["worker"]["healthcheck"]["test"])


def test_the_control_worker_consumes_control_alone_with_its_own_threads(compose: dict[str, Any]):
    service = compose["services"]["control"]
    command = argv(service)
    assert command[:4] == ["celery", "-A", "workers", "worker"]
    assert command[command.index("-Q") + 1] == "control"
    assert command[command.index("-P") + 1] == "threads"
    assert command[command.index("-c") + 1] == "${AGENT_CONTROL_CONCURRENCY:-4}"
    assert command[command.index("-n") + 1] == "control@%h"
    assert "control@$$HOSTNAME" in " ".join(service["healthcheck"]["test"])


@pytest.mark.parametrize("name", LLMPOOL_SERVICES)
def test_llmpool_services_share_redis_and_settings(compose: dict[str, Any], name: str):
    service = compose["services"][name]
    env = service["environment"]
    # `redis` unless the shell or .env says otherwise (the `ha` profile's Sentinels, see below).
    assert env["REDIS_URL"] == "${REDIS_URL:-redis://redis:6379/0}"
    assert env["AGENT_REDIS_MASTER_NAME"] == "${AGENT_REDIS_MASTER_NAME:-mymaster}"
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
    profiled = ("mock-llm", *HA_SERVICES, *MONITORING_SERVICES)
    assert all("profiles" not in s for n, s in services.items() if n not in profiled)
    command = argv(services["mock-llm"])
    assert command[:2] == ["llmpool", "mock-llm"]
    assert command[command.index("--port") + 1] == "7000"
    assert command[command.index("--control-port") + 1] == "7100"
    assert "LOCAL_LLM_HOST=mock-llm" in COMPOSE.read_text()  # the documented way to use it


def test_the_ha_profile_is_a_replica_and_three_sentinels_watching_redis(compose: dict[str, Any]):
    services = compose["services"]
    assert all(services[name]["profiles"] == ["ha"] for name in HA_SERVICES)
    replica = argv(services["redis-replica"])
    primary = argv(services["redis"])
    for command in (primary, replica):  # the same durability and memory rules on both
        assert command[command.index("--appendonly") + 1] == "yes"
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
        assert command[command.index("--maxmemory") + 1] == "${AGENT_REDIS_MAXMEMORY:-1gb}"
    assert replica[replica.index("--replicaof") + 1:replica.index("--replicaof") + 3] == ["redis", "6379"]
    # Each node announces its service name, so Sentinels hand clients names that survive a restart.
    assert primary[primary.index("--replica-announce-ip") + 1] == "redis"
    assert replica[replica.index("--replica-announce-ip") + 1] == "redis-replica"
    volumes = {services[name]["volumes"][0].split(":")[0] for name in HA_SERVICES}
    assert len(volumes) == len(HA_SERVICES) and volumes <= set(compose["volumes"])
    for name in SENTINELS:
        script = argv(services[name])[-1]
        assert services[name]["environment"]["SENTINEL_NAME"] == name
        assert "sentinel monitor ${AGENT_REDIS_MASTER_NAME:-mymaster} redis 6379 2" in script  # quorum 2 of 3
        assert script.endswith("redis-server /data/sentinel.conf --sentinel")
        assert "26379" in services[name]["healthcheck"]["test"]
    # The URL the README and the file's header give names exactly these Sentinels on their port.
    assert SENTINEL_URL in (ROOT / "README.md").read_text() and SENTINEL_URL in COMPOSE.read_text()
    assert load_settings(redis_url=SENTINEL_URL).redis_url == SENTINEL_URL


def test_the_monitoring_profile_scrapes_the_api_and_provisions_the_dashboard(compose: dict[str, Any]):
    services = compose["services"]
    assert all(services[name]["profiles"] == ["monitoring"] for name in MONITORING_SERVICES)
    for name in MONITORING_SERVICES:  # on the host's loopback only: Grafana lets anonymous viewers in
        assert all(str(port).startswith("127.0.0.1:") for port in services[name]["ports"]), name
    mounts = {name: dict(_mount(v) for v in services[name]["volumes"] if v.startswith("./"))
              for name in MONITORING_SERVICES}
    prometheus = argv(services["prometheus"])
    config_path = next(a.split("=", 1)[1] for a in prometheus if a.startswith("--config.file="))
    config = yaml.safe_load((ROOT / mounts["prometheus"][config_path]).read_text())
    targets = {job["job_name"]: (job.get("metrics_path", "/metrics"), job["static_configs"][0]["targets"])
               for job in config["scrape_configs"]}
    assert targets["llmpool"] == ("/metrics", ["api:8080"])  # the API's port inside the compose network
    assert "api" in services["prometheus"]["depends_on"]
    provisioning = ROOT / mounts["grafana"]["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["uid"] == "llmpool-prometheus"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "llmpool.yml").read_text())["providers"]
    dashboards = ROOT / mounts["grafana"][provider["options"]["path"]]
    assert (dashboards / "llmpool.json").is_file()  # what tests/unit/test_dashboard.py checks
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/llmpool.json"


def _mount(volume: str) -> tuple[str, str]:
    """A bind mount `./host:/container[:ro]` as (container path, host path relative to the repo)."""
    host, container = volume.split(":")[:2]
    return container, host


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


# --- what the file means to llmpool ------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def defaults(environment: dict[str, Any]) -> dict[str, str]:
    """The environment compose gives a service when neither the shell nor .env sets a variable."""
    resolved = {}
    for var, value in environment.items():
        text = str(value)
        assert "$" not in INTERPOLATION.sub("", text), f"{var}: only ${{VAR}} and ${{VAR:-default}} are resolved here"
        resolved[var] = INTERPOLATION.sub(lambda m: m["default"] or "", text)
    return resolved


@pytest.mark.parametrize("name", LLMPOOL_SERVICES)
def test_every_variable_compose_passes_is_a_setting_llmpool_reads(compose: dict[str, Any], name: str):
    # Settings ignores unknown variables, so a misspelt one here would be dropped without a word.
    passed = set(compose["services"][name]["environment"])
    assert not {var for var in passed if var.lower() not in Settings.model_fields}


def test_compose_defaults_parse_to_llmpools_own_defaults(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path):
    for name in OUR_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    for var, value in defaults(compose["services"]["worker"]["environment"]).items():
        monkeypatch.setenv(var, value)
    from_compose = load_settings().model_dump()
    own = Settings(_env_file=None).model_dump()  # type: ignore[call-arg]
    assert from_compose.pop("redis_url") == "redis://redis:6379/0"
    own.pop("redis_url")
    assert from_compose == own


def _programs(service: dict[str, Any]) -> list[list[str]]:
    """The command lines a service runs: its command and its healthcheck."""
    lines = [argv(service)]
    test = (service.get("healthcheck") or {}).get("test") or []
    if test[:1] == ["CMD"]:
        lines.append([str(part) for part in test[1:]])
    elif test[:1] == ["CMD-SHELL"]:
        lines.append(shlex.split(test[1]))
    return lines


def _base_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(project["name"])} | {
        canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}


def _provider(group: str, name: str) -> str | None:
    found = [ep for ep in entry_points(group=group, name=name) if ep.dist is not None]
    return canonicalize_name(found[0].dist.name) if found else None  # type: ignore[union-attr]


def test_the_image_installs_every_program_a_service_runs(compose: dict[str, Any]):
    dockerfile = (ROOT / "Dockerfile").read_text()
    # `pip install .`: the base dependencies only, no extra (test, dev and local stay out of the image).
    assert re.search(r"^RUN pip install \.\s", dockerfile, re.MULTILINE)
    base = _base_distributions()
    for name in (*LLMPOOL_SERVICES, "mock-llm"):
        for line in _programs(compose["services"][name]):
            program = line[0]
            if program == "python":
                continue  # the healthchecks' one-liners use the standard library only
            assert _provider("console_scripts", program) in base, f"{name}: {program}"
            if program == "celery":  # a subcommand celery does not have itself comes from a plugin
                sub = line[3]
                assert sub in ("worker", "beat", "inspect") or _provider("celery.commands", sub) in base, (name, sub)
            if program == "llmpool":
                assert _provider("llmpool.commands", line[1]) in base, (name, line[1])
