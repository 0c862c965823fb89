"""docker-compose.yml runs: docker-compose accepts it, and each llmpool service's command, as compose
resolves it, starts against a real Redis and passes the service's own healthcheck.

No Docker here: each command runs as a process of this machine with the environment compose gives
it (its defaults, REDIS_URL pointed at a test Redis), free ports in place of the fixed ones, and a
temporary directory for the image's data directory. What the file says is in tests/unit/test_compose.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from llmpool.dev.redis_server import RedisServer, free_port
from tests.conftest import IN_CI, require_redis_binary
from tests.processes import ROOT, ManagedProcess, clean_env, wait_for

COMPOSE = ROOT / "docker-compose.yml"
IMAGE_DATA_DIR = "/home/llmpool/data"  # the Dockerfile's AGENT_DATA_DIR
PORT_OPTION = re.compile(r"^--(?:control-)?port(?:=(\d+))?$")


def docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        if IN_CI:
            pytest.fail("docker-compose is missing under CI (.ci/run installs it)")
        pytest.skip("docker-compose is not installed")
    return binary


def compose_config(tmp: Path, profile: list[str]) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` as a fresh shell would run it: no llmpool variable set, no .env."""
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE), "--project-directory", str(tmp), *profile, "config"],
        cwd=tmp, env=clean_env(), capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("profile", [[], ["--profile", "demo"]])
def test_docker_compose_accepts_it(tmp_path: Path, profile: list[str]):
    result = compose_config(tmp_path, profile)
    assert result.returncode == 0, result.stderr


# --- each service's command, run -------------------------------------------------------------------

def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def healthcheck_of(service: dict[str, Any]) -> list[str]:
    """The healthcheck as an argv; `$$` is compose's escape for a `$` the container's shell expands."""
    test = [str(part).replace("$$", "$") for part in service["healthcheck"]["test"]]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    assert test[0] == "CMD", test
    return test[1:]


class Service:
    """One compose service run here: its resolved command, ports moved, env pointed at our Redis."""

    def __init__(self, name: str, spec: dict[str, Any], *, tmp: Path, redis_url: str) -> None:
        self.name, self.spec = name, spec
        argv = command_of(spec)
        ports = {m[1] or argv[i + 1] for i, arg in enumerate(argv) if (m := PORT_OPTION.match(arg))}
        self.ports = {old: str(free_port()) for old in ports}
        self.argv = [self._moved(arg).replace(IMAGE_DATA_DIR, str(tmp)) for arg in argv]
        bin_dir = str(Path(sys.executable).parent)  # the venv's celery, uvicorn and llmpool, as in the image
        self.env = {**clean_env(), **{k: str(v) for k, v in (spec.get("environment") or {}).items()},
                    "REDIS_URL": redis_url, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                    "HOSTNAME": socket.gethostname()}  # Docker sets it to the container's hostname (%h)
        self.process = ManagedProcess(name, self.argv, self.env, tmp / f"{name}.log")

    def _moved(self, text: str) -> str:
        for old, new in self.ports.items():
            text = re.sub(rf"\b{old}\b", new, text)
        return text

    def port(self, original: str) -> str:
        return self.ports[original]

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        argv = [self._moved(arg) for arg in healthcheck_of(self.spec)]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """Every llmpool service of the demo profile, started together on one test Redis."""
    require_redis_binary()
    tmp = tmp_path_factory.mktemp("compose")
    config = compose_config(tmp, ["--profile", "demo"])
    assert config.returncode == 0, config.stderr
    resolved = yaml.safe_load(config.stdout)["services"]
    with RedisServer(data_dir=tmp / "redis") as server:
        running = {name: Service(name, spec, tmp=tmp, redis_url=server.url)
                   for name, spec in resolved.items() if name != "redis"}
        try:
            for service in running.values():
                service.process.start()
            yield running
        finally:
            for service in running.values():
                service.process.stop()


def test_the_services_are_the_llmpool_commands_and_redis(services: dict[str, Service]):
    assert set(services) == {"worker", "beat", "api", "flower", "mock-llm"}


def test_the_worker_starts_and_its_healthcheck_finds_it_by_name(services: dict[str, Service]):
    worker = services["worker"]
    client = redis.Redis.from_url(worker.env["REDIS_URL"])
    node = f"worker@{socket.gethostname()}"  # -n worker@%h: the name the healthcheck pings
    try:
        # Ready once it consumes, remote control included (a ping sent before is lost), and beats.
        worker.process.wait_ready(lambda: f"{node} ready." in worker.process.log_tail(200)
                                  and client.zscore("llmpool:workers", node) is not None, timeout=60)
    finally:
        client.close()
    check = worker.healthcheck()
    assert check.returncode == 0, check.stdout + check.stderr + worker.process.log_tail()
    assert "pong" in check.stdout


@pytest.mark.parametrize(("name", "port", "path"), [
    ("api", "8080", "/"), ("flower", "5555", "/healthcheck"), ("mock-llm", "7000", "/health"),
])
def test_an_http_service_starts_and_passes_its_healthcheck(services: dict[str, Service], name: str, port: str,
                                                          path: str):
    service = services[name]
    service.process.wait_ready(lambda: _answers(f"http://127.0.0.1:{service.port(port)}{path}"), timeout=60)
    check = service.healthcheck()
    assert check.returncode == 0, check.stdout + check.stderr + service.process.log_tail()


def test_beat_starts_with_its_schedule_in_the_data_dir(services: dict[str, Service]):
    beat = services["beat"]
    beat.process.wait_ready(lambda: "beat: Starting" in beat.process.log_tail(200), timeout=60)
    schedule = Path(beat.argv[beat.argv.index("-s") + 1])
    wait_for(lambda: any(schedule.parent.glob(schedule.name + "*")), timeout=30, what="beat's schedule file")
    assert beat.process.alive(), beat.process.log_tail()
