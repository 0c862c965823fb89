"""`llmpool up` end to end: the whole stack starts, answers a chat, and stops leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from llmpool.dev.redis_server import free_port
from tests.conftest import require_redis_binary

READY_LINE = "llmpool is up"
# Variables of the caller's environment that would change what the stack does.
OWN_PREFIXES = ("AGENT_", "LOCAL_LLM_", "LOCAL_MODEL_", "CLOUD_", "USE_CLOUD_", "LLM_CONTAINER_")
OWN_NAMES = ("REDIS_URL", "JWT_SECRET", "MOCK_LLM_TOKEN")


class Up:
    """A running `llmpool up`, its output collected line by line."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmpool.cli", "up", "--ready-timeout", "60"],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.seen: set[psutil.Process] = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not any(READY_LINE in line for line in self.lines):
            assert self.proc.poll() is None, f"llmpool up exited early:\n{self.tail()}"
            assert time.monotonic() < deadline, f"not up after {timeout}s:\n{self.tail()}"
            self.descendants()
            time.sleep(0.2)

    def descendants(self) -> list[psutil.Process]:
        """Every process of its tree seen so far (kept, so the finally can kill them)."""
        try:
            self.seen.update(self.ps.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        return list(self.seen)

    def tail(self, n: int = 80) -> str:
        return "\n".join(self.lines[-n:])

    def kill_tree(self) -> None:
        procs = [self.ps, *self.descendants()]
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=5)
        self.proc.wait(5)


@pytest.fixture(scope="module", autouse=True)
def needs_redis_binary() -> None:
    require_redis_binary()


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(OWN_PREFIXES) and key not in OWN_NAMES
    }
    env.update({
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "AGENT_API_PORT": str(free_port()),
        "AGENT_FLOWER_PORT": str(free_port()),
        "LOCAL_LLM_PORT": str(free_port()),
        "AGENT_DATA_DIR": str(tmp_path / "data"),
        "AGENT_BACKEND_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "AGENT_WORKER_CONCURRENCY": "4",
    })
    return env


@pytest.fixture
def up(tmp_path: Path, stack_env: dict[str, str]) -> Iterator[Up]:
    stack = Up(tmp_path, stack_env)  # cwd = tmp: its own .env (none) and data dir
    try:
        yield stack
    finally:
        stack.kill_tree()


def gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still alive (zombies count as gone) after waiting up to `timeout`."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p for p in alive if _alive(p)]


def _argv(proc: psutil.Process) -> list[str]:
    """Its command line, or [] for a process that has already gone.

    The tree holds short-lived children too (redis-server forks to rewrite its AOF), which may
    exit between being listed and being read.
    """
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(180)
def test_up_answers_a_chat_and_stops_cleanly(up: Up, stack_env: dict[str, str]):
    up.wait_ready()
    api = f"http://127.0.0.1:{stack_env['AGENT_API_PORT']}"
    response = httpx.post(
        f"{api}/poll_requests", json={"message": "Hello", "thread_id": "t1"},
        headers={"Accept": "application/json"}, timeout=30,
    )
    assert response.status_code == 200, response.text
    assert "You said: Hello" in response.text
    tree = up.descendants()
    names = " ".join(" ".join(_argv(p)) for p in tree)
    for part in ("redis-server", "llmpool.dev.mock_llm", "worker1@%h", "control1@%h", "beat", "flower", "uvicorn"):
        assert part in names, part
    # The embedded Redis refuses writes past AGENT_REDIS_MAXMEMORY (1gb) rather than evicting jobs.
    status = httpx.get(f"{api}/status", timeout=10).json()
    assert status["workers"] == 2  # the chat worker and the control worker
    assert status["redis_memory"]["maxmemory"] == 2**30 and status["redis_memory"]["policy"] == "noeviction"

    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(20) == 0, up.tail()
    assert gone(tree, timeout=2) == []
    assert "curl -N -X POST" in up.tail(200)


@pytest.mark.timeout(180)
def test_sigkill_of_up_leaves_no_child(up: Up):
    up.wait_ready()
    tree = up.descendants()
    assert tree
    up.proc.kill()
    up.proc.wait(5)
    assert gone(tree, timeout=15) == [], "children outlived a SIGKILLed `llmpool up`"


def test_a_bad_setting_exits_2_and_starts_nothing(tmp_path: Path, stack_env: dict[str, str]):
    env = {**stack_env, "AGENT_HEALTH_CHECK_INTERVAL": "abc"}
    result = subprocess.run(
        [sys.executable, "-m", "llmpool.cli", "up"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "AGENT_HEALTH_CHECK_INTERVAL" in result.stderr
    assert not (tmp_path / "data").exists()  # no Redis, no logs: nothing was started


def _part(up: Up, program: str, *args: str) -> psutil.Process:
    """The live part whose program's name starts with `program` and that has each of `args` as an
    argument (exact arguments: a data dir named after the test must not make beat look like the worker)."""
    return next(p for p in up.descendants() if _alive(p) and (argv := _argv(p))
                and Path(argv[0]).name.startswith(program) and all(a in argv[1:] for a in args))


@pytest.mark.timeout(240)
def test_up_restarts_a_killed_worker_and_its_embedded_redis(up: Up, stack_env: dict[str, str]):
    up.wait_ready()
    api = f"http://127.0.0.1:{stack_env['AGENT_API_PORT']}"

    def chat(text: str) -> httpx.Response:
        return httpx.post(f"{api}/poll_requests", json={"message": text},
                          headers={"Accept": "application/json"}, timeout=60)

    _part(up, "python", "celery", "worker", "worker1@%h").kill()
    deadline = time.monotonic() + 30
    while not any("worker exited with code -9; restarting it" in line for line in up.lines):
        assert time.monotonic() < deadline, up.tail()
        time.sleep(0.2)
    assert chat("after the worker").status_code == 200
    _part(up, "redis-server").kill()
    deadline = time.monotonic() + 30
    while not any("redis exited with code -9; restarting it" in line for line in up.lines):
        assert time.monotonic() < deadline, up.tail()
        time.sleep(0.2)
    for _ in range(60):  # the API answers 503 until Redis is back, then the job runs
        response = chat("after redis")
        if response.status_code != 503:
            break
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    assert up.proc.poll() is None  # the stack stayed up throughout
