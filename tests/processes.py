"""Real processes for integration tests: a Celery worker and the API, each a subprocess.

Every wait is bounded, every process runs in its own group and is killed with it, and a process
that fails to start shows the tail of its log in the failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from llmpool.dev.redis_server import free_port
from llmpool.redis_conn import sync_client
from llmpool.settings import Settings

__all__ = ["clean_env", "ManagedProcess", "start_worker", "start_api", "start_beat", "start_flower", "wait_for"]

ROOT = Path(__file__).resolve().parent.parent
OUR_VARS = {name.upper() for name in Settings.model_fields}


def clean_env(**overrides: object) -> dict[str, str]:
    """The test runner's environment without any llmpool setting, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in OUR_VARS}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k.upper(): str(v) for k, v in overrides.items() if v is not None})
    return env


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class ManagedProcess:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.log_path.parent, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, check: Callable[[], bool], timeout: float) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            return check()

        try:
            wait_for(ready, timeout=timeout, what=f"{self.name} to be ready")
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None
        except BaseException:
            self.stop()  # interrupted (Ctrl-C), or the check itself raised: leave no process behind
            raise

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.kill()  # the group may outlive its leader
            return
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill(signal.SIGKILL)
        self.proc.wait(5)


def start_worker(
    tmp: Path, env: dict[str, str], *, name: str = "w1", concurrency: int = 8,
    queues: str = "control,chat.high,chat.default,chat.low", timeout: float = 30.0,
    loglevel: str = "INFO", pool: str = "threads",
) -> ManagedProcess:
    """A real `celery worker` (threads pool by default); ready once its heartbeat is recorded in Redis."""
    hostname = f"{name}@{os.uname().nodename}-{os.getpid()}"
    argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-P", pool,
            "-c", str(concurrency), "-Q", queues, "-n", hostname, "-E", "--without-gossip",
            "--without-mingle", "--loglevel", loglevel]
    proc = ManagedProcess(f"worker {name}", argv, env, tmp / f"worker-{name}.log").start()
    client = sync_client(env["REDIS_URL"], master_name=env.get("AGENT_REDIS_MASTER_NAME", "mymaster"))
    prefix = env.get("AGENT_REDIS_PREFIX", "llmpool")
    try:
        proc.wait_ready(lambda: client.zscore(f"{prefix}:workers", hostname) is not None, timeout)
    finally:
        client.close()
    return proc


def start_api(tmp: Path, env: dict[str, str], *, timeout: float = 30.0) -> tuple[ManagedProcess, str]:
    """The real ASGI app under uvicorn on a free port; returns the process and its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]
    proc = ManagedProcess("api", argv, env, tmp / "api.log").start()
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(url + "/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    proc.wait_ready(answers, timeout)
    return proc, url


def start_flower(tmp: Path, env: dict[str, str], *, timeout: float = 30.0) -> tuple[ManagedProcess, str]:
    """Flower as `llmpool up` and compose start it (workers.flower_app) on a free port; its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "celery", "-A", "workers.flower_app", "flower", f"--port={port}",
            "--address=127.0.0.1"]
    proc = ManagedProcess("flower", argv, env, tmp / "flower.log").start()
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(url + "/healthcheck", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    proc.wait_ready(answers, timeout)
    return proc, url


def start_beat(tmp: Path, env: dict[str, str], *, timeout: float = 30.0) -> ManagedProcess:
    """A real `celery beat`; ready once it logs that it is starting."""
    argv = [sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO",
            "-s", str(tmp / "celerybeat-schedule")]
    proc = ManagedProcess("beat", argv, env, tmp / "beat.log").start()
    proc.wait_ready(lambda: "beat: Starting" in proc.log_tail(200), timeout)
    return proc
