"""docker-compose.yml runs: docker-compose accepts it, each llmpool service's command, as compose
resolves it, starts against a real Redis and passes the service's own healthcheck, and Flower, run
so, shows a chat job by its summary, never its text.

No Docker here: each command runs as a process of this machine with the environment compose gives
it (its defaults, REDIS_URL pointed at a test Redis), free ports in place of the fixed ones, and a
temporary directory for the image's data directory. What the file says is in tests/unit/test_compose.py.
"""

from __future__ import annotations

import html
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from celery import Celery

from llmpool.dev.mock_llm import MockControl
from llmpool.dev.redis_server import RedisServer, free_port
from tests.conftest import IN_CI, require_redis_binary
from tests.processes import ROOT, ManagedProcess, clean_env, wait_for
from workers.request import HIDDEN_RESULT

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


def compose_config(tmp: Path, profile: list[str], **shell: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` as a shell would run it: no .env, no llmpool variable but `shell`."""
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE), "--project-directory", str(tmp), *profile, "config"],
        cwd=tmp, env=clean_env(**shell), capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("profile", [[], ["--profile", "demo"], ["--profile", "ha"], ["--profile", "monitoring"]])
def test_docker_compose_accepts_it(tmp_path: Path, profile: list[str]):
    result = compose_config(tmp_path, profile)
    assert result.returncode == 0, result.stderr


# --- each service's command, run -------------------------------------------------------------------

NODE = f"worker@{socket.gethostname()}"  # the worker's -n worker@%h
CONTROL_NODE = f"control@{socket.gethostname()}"  # the control worker's -n control@%h
MOCK_LLM_PORT = "7000"  # the mock's chat port in its command; the workers reach it at LOCAL_LLM_PORT


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


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Service:
    """One compose service run here: its resolved command, ports moved, env pointed at our Redis."""

    def __init__(self, name: str, spec: dict[str, Any], *, tmp: Path, redis_url: str, ports: dict[str, str]) -> None:
        self.name, self.spec = name, spec
        argv = command_of(spec)
        found = {m[1] or argv[i + 1] for i, arg in enumerate(argv) if (m := PORT_OPTION.match(arg))}
        self.ports = {old: ports.get(old) or str(free_port()) for old in found}
        self.argv = [self._moved(arg).replace(IMAGE_DATA_DIR, str(tmp)) for arg in argv]
        bin_dir = str(Path(sys.executable).parent)  # the venv's celery, uvicorn and llmpool, as in the image
        self.env = {**clean_env(), **{k: str(v) for k, v in (spec.get("environment") or {}).items()},
                    "REDIS_URL": redis_url, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                    "HOSTNAME": socket.gethostname()}  # Docker sets it to the container's hostname (%h)
        self.process = ManagedProcess(name, self.argv, self.env, tmp / f"{name}.log")
        self._ready = False

    def _moved(self, text: str) -> str:
        for old, new in self.ports.items():
            text = re.sub(rf"\b{old}\b", new, text)
        return text

    def url(self, port: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def log_has(self, text: str) -> bool:
        return text in self.process.log_tail(300)

    def wait_ready(self) -> Service:
        """Wait until the service does what it is for (once; every test may ask)."""
        if not self._ready:
            self.process.wait_ready(READY[self.name](self), timeout=60)
            self._ready = True
        return self

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        argv = [self._moved(arg) for arg in healthcheck_of(self.spec)]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)


def _worker_ready(node: str) -> Callable[[Service], Callable[[], bool]]:
    def ready(worker: Service) -> Callable[[], bool]:
        client = redis.Redis.from_url(worker.env["REDIS_URL"])
        # It consumes, remote control included (a ping sent before that is lost), and it beats.
        return lambda: worker.log_has(f"{node} ready.") and client.zscore("llmpool:workers", node) is not None

    return ready


READY: dict[str, Callable[[Service], Callable[[], bool]]] = {
    "worker": _worker_ready(NODE),
    "control": _worker_ready(CONTROL_NODE),
    "beat": lambda beat: lambda: beat.log_has("beat: Starting"),
    "api": lambda api: lambda: _answers(api.url("8080", "/")),
    "flower": lambda flower: lambda: _answers(flower.url("5555", "/healthcheck")),
    "mock-llm": lambda mock: lambda: _answers(mock.url(MOCK_LLM_PORT, "/health")),
}


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """Every llmpool service of the demo profile, started together on one test Redis.

    As the compose file's header says for the demo, LOCAL_LLM_HOST and LOCAL_LLM_PORT, set in the
    shell, point the workers at the mock LLM.
    """
    require_redis_binary()
    tmp = tmp_path_factory.mktemp("compose")
    mock_port = str(free_port())
    config = compose_config(tmp, ["--profile", "demo"], local_llm_host="127.0.0.1", local_llm_port=mock_port)
    assert config.returncode == 0, config.stderr
    resolved = yaml.safe_load(config.stdout)["services"]
    with RedisServer(data_dir=tmp / "redis") as server:
        # docker-compose 1.29's `config` lists every profile's services: the `ha` profile's are Redis's own,
        # the `monitoring` profile's are Prometheus and Grafana images, not llmpool commands.
        others = {"ha", "monitoring"}
        running = {name: Service(name, spec, tmp=tmp, redis_url=server.url, ports={MOCK_LLM_PORT: mock_port})
                   for name, spec in resolved.items() if name != "redis" and not others & set(spec.get("profiles", []))}
        try:
            for service in running.values():
                service.process.start()
            yield running
        finally:
            for service in running.values():
                service.process.stop()


def test_the_services_are_the_llmpool_commands_and_redis(services: dict[str, Service]):
    assert set(services) == {"worker", "control", "beat", "api", "flower", "mock-llm"}


@pytest.mark.parametrize(("name", "node"), [("worker", NODE), ("control", CONTROL_NODE)])
def test_a_worker_starts_and_its_healthcheck_finds_it_by_name(services: dict[str, Service], name: str, node: str):
    worker = services[name].wait_ready()
    check = worker.healthcheck()
    assert check.returncode == 0, check.stdout + check.stderr + worker.process.log_tail()
    assert f"{node}: OK" in check.stdout and "pong" in check.stdout


@pytest.mark.parametrize("name", ["api", "flower", "mock-llm"])
def test_an_http_service_starts_and_passes_its_healthcheck(services: dict[str, Service], name: str):
    service = services[name].wait_ready()
    check = service.healthcheck()
    assert check.returncode == 0, check.stdout + check.stderr + service.process.log_tail()


def test_beat_starts_with_its_schedule_in_the_data_dir(services: dict[str, Service]):
    beat = services["beat"].wait_ready()
    schedule = Path(beat.argv[beat.argv.index("-s") + 1])
    wait_for(lambda: any(schedule.parent.glob(schedule.name + "*")), timeout=30, what="beat's schedule file")
    assert beat.process.alive(), beat.process.log_tail()


# --- what Flower shows of a chat ----------------------------------------------------------------------

SECRET = "purple-elephant-4242"


def _page(url: str) -> str:
    return html.unescape(httpx.get(url, timeout=30).text)


def test_flower_and_inspect_show_a_chat_by_its_summary_running_and_finished(services: dict[str, Service]):
    worker, api, flower, mock = (services[n].wait_ready() for n in ("worker", "api", "flower", "mock-llm"))
    wait_for(lambda: httpx.get(api.url("8080", "/status"), timeout=5).json()["current_llm"] is not None,
             timeout=30, what="the workers to select the mock LLM")
    # Flower follows tasks through the workers' events: it must be hearing them before the chat.
    heard = f'flower_worker_online{{worker="{NODE}"}} 1.0'  # set by the worker's heartbeat events
    wait_for(lambda: heard in httpx.get(flower.url("5555", "/metrics"), timeout=5).text,
             timeout=30, what="Flower to hear the worker's events")
    control = MockControl(mock.url("7100"))
    container = control.containers()[0]["name"]
    control.configure(container, ttft=4.0)  # the chat runs long enough to look at it while it runs
    answers: list[httpx.Response] = []
    asker = threading.Thread(target=lambda: answers.append(httpx.post(
        api.url("8080", "/poll_requests"), json={"message": SECRET}, headers={"Accept": "application/json"},
        timeout=60)))
    asker.start()
    try:
        wait_for(lambda: control.stats(container)["in_flight"] > 0, timeout=30, what="the chat to reach the LLM")
        inspector = Celery("operator", set_as_current=False)
        inspector.conf.update(broker_url=worker.env["REDIS_URL"])
        active = inspector.control.inspect(destination=[NODE], timeout=5).active()  # `celery inspect active`
        running = _page(flower.url("5555", f"/worker/{NODE}"))  # Flower's own inspect, safe mode
    finally:
        asker.join(60)
        control.configure(container, ttft=0.01)
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
    body = answers[0].json()
    assert SECRET in body["answer"]  # the text did go through the worker to the LLM and back
    [shown] = (active or {}).get(NODE, [])  # the chat, caught running
    assert (shown["id"], shown["args"]) == (body["job_id"], "('<chat job: 1 messages, priority=default>',)")
    assert SECRET not in repr(active)
    assert "<chat job: 1 messages, priority=default>" in running and SECRET not in running
    task = flower.url("5555", f"/task/{body['job_id']}")
    wait_for(lambda: "SUCCESS" in _page(task), timeout=30, what="Flower to see the chat succeed")
    finished = _page(task)
    assert "<chat job: 1 messages, priority=default>" in finished
    assert HIDDEN_RESULT.replace("{id}", body["job_id"]) in finished and SECRET not in finished
