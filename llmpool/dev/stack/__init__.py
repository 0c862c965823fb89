"""`llmpool up`: Redis, the demo LLM, the chat and control workers, beat, Flower and the API on one machine.

Starts what is missing (an embedded Redis when nothing answers at a local REDIS_URL, the mock LLM
when no LLM is configured), waits until the API sees a live worker and Flower answers, prints the
URLs and `llmpool is up`, then supervises until Ctrl-C / SIGTERM or until a part dies.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from llmpool.auth import container_bearer_token
from llmpool.dev.redis_server import RedisServer, redis_answers
from llmpool.dev.stack.probes import (
    all_ready,
    api_probe,
    configured_llm,
    connect_host,
    flower_probe,
    http_status,
    is_local_host,
)
from llmpool.dev.stack.supervisor import StackAborted, Supervisor
from llmpool.redis_conn import is_sentinel_url, redacted_url, sentinel_master
from llmpool.settings import Settings, issues_report, load_settings

__all__ = ["add_arguments", "run"]

QUEUES = "control,chat.high,chat.default,chat.low"  # -Q order is priority order (kombu >= 5.7)
# The control worker consumes `control` alone: discovery, health and refresh never wait for a chat
# slot. The chat worker keeps `control` first as a fallback: it takes a control message only when
# one of its slots is free (no prefetch), so it never holds one back from the control worker.
CONTROL_QUEUES = "control"
WORKER_PROCESSES = 2  # the chat worker and the control worker: the API must see both before "up"
READY_LINE = "llmpool is up"
SENTINEL_WAIT = 15.0  # Sentinels started with the stack may take a few seconds to agree on a master


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ready-timeout", type=float, default=60.0, metavar="SECONDS",
        help="how long to wait for the API to see a worker and for Flower (default 60)",
    )
    parser.add_argument(
        "--stop-timeout", type=float, default=None, metavar="SECONDS",
        help="seconds each part gets after SIGTERM before SIGKILL (default: AGENT_SHUTDOWN_GRACE + 5, min 10)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the stack, supervise it, stop it; 0 after a requested stop, 1 on any failure."""
    settings = load_settings()  # a ConfigError here reaches cli.py, which exits 2
    supervisor = Supervisor(json_lines=settings.agent_log_format == "json")
    report = issues_report(settings)
    if report:
        supervisor.say(report)
    supervisor.install_signal_handlers()
    try:
        banner = _start_stack(supervisor, settings, ready_timeout=args.ready_timeout)
        supervisor.write(banner)
        return supervisor.watch()
    except StackAborted as exc:
        started = bool(supervisor.children)
        supervisor.say(f"{exc}; stopping everything" if exc.code and started else str(exc))
        return exc.code
    finally:
        if supervisor.children:
            supervisor.stop_all(timeout=_stop_timeout(args, settings))
            supervisor.say("all stopped")


def _stop_timeout(args: argparse.Namespace, settings: Settings) -> float:
    """What each part gets after SIGTERM: the worker needs its shutdown grace and a little more."""
    if args.stop_timeout is not None:
        return float(args.stop_timeout)
    return max(10.0, settings.agent_shutdown_grace + 5)


def _start_stack(supervisor: Supervisor, settings: Settings, *, ready_timeout: float) -> str:
    """Start every part in dependency order; return the banner to print once ready."""
    data_dir = Path(settings.agent_data_dir).resolve()
    log_dir = data_dir / "logs"
    # Python children buffer stdout in blocks when it is a pipe; we want their lines as they come.
    env = {**os.environ, "REDIS_URL": settings.redis_url, "PYTHONUNBUFFERED": "1"}
    redis = _ensure_redis(supervisor, settings, data_dir=data_dir, env=env)
    llm = configured_llm(settings)
    if llm is None:
        llm = _start_mock_llm(supervisor, settings, env=env, log_dir=log_dir)
        # The workers must find the mock where it listens, whatever LOCAL_LLM_HOST said.
        env["LOCAL_LLM_HOST"] = "127.0.0.1"
    for name, argv in _service_commands(settings, data_dir=data_dir):
        supervisor.start(name, argv, env=env, log_dir=log_dir)
    api_url = f"http://{connect_host(settings.agent_api_host)}:{settings.agent_api_port}"
    flower_url = f"http://127.0.0.1:{settings.agent_flower_port}"
    ready = all_ready(api_probe(api_url, workers=WORKER_PROCESSES), flower_probe(flower_url))
    supervisor.wait_for("the stack", ready, timeout=ready_timeout)
    return _banner(settings, redis=redis, llm=llm, log_dir=log_dir)


def _ensure_redis(
    supervisor: Supervisor, settings: Settings, *, data_dir: Path, env: dict[str, str]
) -> str:
    """Use the Redis at REDIS_URL, or start the embedded one when the URL is local; describe it."""
    url = settings.redis_url
    shown = _redact(url)
    if is_sentinel_url(url):
        return _use_sentinels(supervisor, settings)
    if redis_answers(url):
        return f"{shown} (already running)"
    host = urlsplit(url).hostname
    if url.startswith("unix://") or not is_local_host(host):
        raise StackAborted(
            f"no Redis answers at {shown}, and it is not on this machine: start it, or set "
            "REDIS_URL=redis://localhost:6379/0 to let `llmpool up` start one"
        )
    try:
        server = RedisServer(
            port=urlsplit(url).port or 6379, data_dir=data_dir / "redis",
            host="::1" if host == "::1" else "127.0.0.1", maxmemory=settings.agent_redis_maxmemory,
        )
    except FileNotFoundError as exc:
        raise StackAborted(f"cannot start Redis: {exc}") from None
    server.data_dir.mkdir(parents=True, exist_ok=True)
    supervisor.start("redis", _log_to_stdout(server.command()), env=env, log_dir=data_dir / "logs")
    supervisor.wait_for("redis", lambda: None if redis_answers(url, 0.2) else "no PING", timeout=15)
    return f"{shown} (embedded, data in {server.data_dir})"


def _use_sentinels(supervisor: Supervisor, settings: Settings) -> str:
    """REDIS_URL names Sentinels: start no Redis (HA is theirs to run), wait for the master they name."""
    url, name = settings.redis_url, settings.agent_redis_master_name
    shown = _redact(url)

    def master_answers() -> str | None:
        address = sentinel_master(url, master_name=name, timeout=0.5)
        if address is None:
            return f"no Sentinel at {shown} names a live master {name!r} (AGENT_REDIS_MASTER_NAME)"
        if not redis_answers(url, 0.5, master_name=name):
            return f"the master {name!r} at {address[0]}:{address[1]} does not answer PING"
        return None

    supervisor.wait_for("redis via Sentinels", master_answers, timeout=SENTINEL_WAIT)
    host, port = sentinel_master(url, master_name=name, timeout=0.5) or ("?", 0)
    return f"{shown} (master {name!r} at {host}:{port}, via Sentinels)"


def _log_to_stdout(argv: list[str]) -> list[str]:
    # An empty logfile makes redis-server log to stdout, which we prefix and copy to logs/redis.log.
    if "--logfile" in argv:
        argv = list(argv)
        argv[argv.index("--logfile") + 1] = ""
    return argv


def _start_mock_llm(
    supervisor: Supervisor, settings: Settings, *, env: dict[str, str], log_dir: Path
) -> str:
    """Start the mock LLM as the local host LLM and wait for its /health; describe it."""
    port = settings.local_llm_port
    argv = [
        sys.executable, "-m", "llmpool.dev.mock_llm", "--host", "127.0.0.1",
        "--port", str(port), "--control-port", "0", "--model", settings.local_model_name,
    ]
    mock_env = dict(env)
    token = container_bearer_token(settings)
    if token is not None:  # in the environment, not argv: argv shows in `ps`
        mock_env["MOCK_LLM_TOKEN"] = token
    supervisor.say(f"no LLM configured or answering: starting the demo mock LLM on port {port}")
    supervisor.start("mock-llm", argv, env=mock_env, log_dir=log_dir)
    health = f"http://127.0.0.1:{port}/health"
    supervisor.wait_for(
        "mock-llm", lambda: None if http_status(health) == 200 else f"GET {health}", timeout=20
    )
    return f"http://127.0.0.1:{port} (demo mock LLM, model {settings.local_model_name})"


def _service_commands(settings: Settings, *, data_dir: Path) -> list[tuple[str, list[str]]]:
    """The Celery and HTTP processes, in start order; they stop in reverse (api first)."""
    python = sys.executable
    level = logging.getLevelName(settings.log_level)  # AGENT_DEBUG_MODE turns on DEBUG
    return [
        ("worker", [
            python, "-m", "celery", "-A", "workers", "worker",
            "-P", settings.agent_worker_pool, "-c", str(settings.agent_worker_concurrency),
            "-Q", QUEUES, "-E", "-n", "worker1@%h", "--loglevel", level,
        ]),
        ("control", [
            python, "-m", "celery", "-A", "workers", "worker",
            "-P", "threads", "-c", str(settings.agent_control_concurrency),
            "-Q", CONTROL_QUEUES, "-E", "-n", "control1@%h", "--loglevel", level,
        ]),
        ("beat", [
            python, "-m", "celery", "-A", "workers", "beat", "--loglevel", level,
            "-s", f"{data_dir}/celerybeat-schedule",
        ]),
        # workers.flower_app gives Flower its basic auth (AGENT_FLOWER_BASIC_AUTH, through its
        # environment, not argv) and purges offline workers.
        ("flower", [
            python, "-m", "celery", "-A", "workers.flower_app", "flower",
            f"--port={settings.agent_flower_port}", "--address=127.0.0.1",
        ]),
        ("api", [
            python, "-m", "uvicorn", "api.app:app",
            "--host", settings.agent_api_host, "--port", str(settings.agent_api_port),
        ]),
    ]


def _banner(settings: Settings, *, redis: str, llm: str, log_dir: Path) -> str:
    api_host = connect_host(settings.agent_api_host)
    api = f"http://{'localhost' if api_host == '127.0.0.1' else api_host}:{settings.agent_api_port}"
    body = '{"message": "Hello", "thread_id": "test-123"}'
    return "\n".join([
        "",
        f"  API      {api}   (status: {api}/status)",
        f"  Flower   http://127.0.0.1:{settings.agent_flower_port}   ({_flower_auth(settings)})",
        f"  Redis    {redis}",
        f"  LLM      {llm}",
        f"  Logs     {log_dir}/",
        "  Try it:",
        f"    curl -N -X POST {api}/poll_requests -H \"Content-Type: application/json\" -d '{body}'",
        "  Stop:    Ctrl-C",
        "",
        READY_LINE,
        "",
    ])


def _flower_auth(settings: Settings) -> str:
    """How Flower is opened, naming the user and never the password."""
    if settings.agent_flower_basic_auth is None:
        return "no auth: its REST API answers 401; set AGENT_FLOWER_BASIC_AUTH=user:password"
    return f"basic auth, user {settings.agent_flower_basic_auth.get_secret_value().partition(':')[0]}"


def _redact(url: str) -> str:
    """The URL with its passwords, if any, replaced by *** (every part of a sentinel list)."""
    return redacted_url(url)
