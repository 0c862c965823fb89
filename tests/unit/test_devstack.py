"""What `llmpool up` decides to start: the LLM probes, the Redis choice, what it prints."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fakeredis import TcpFakeServer

from llmpool.dev.redis_server import free_port
from llmpool.dev.stack import _ensure_redis, _log_to_stdout, _redact
from llmpool.dev.stack.probes import api_probe, configured_llm, connect_host
from llmpool.dev.stack.supervisor import StackAborted, Supervisor
from llmpool.settings import Settings

CLOSED = f"http://127.0.0.1:{free_port()}"


class Fake:
    """A tiny HTTP server answering GET paths from a dict: path -> (status, JSON body)."""

    def __init__(self, routes: dict[str, tuple[int, Any]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, body = routes.get(self.path, (404, {}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Routes = dict[str, tuple[int, Any]]


@pytest.fixture
def fake() -> Iterator[Callable[[Routes], Fake]]:
    servers: list[Fake] = []

    def make(routes: Routes) -> Fake:
        servers.append(Fake(routes))
        return servers[-1]

    yield make
    for server in servers:
        server.server.shutdown()


def settings(**values: Any) -> Settings:
    # Explicit values, so the caller's environment cannot configure an LLM behind our back.
    base = {
        "local_llm_host": "127.0.0.1", "local_llm_port": free_port(), "agent_backend_url": CLOSED,
        "use_cloud_llm": False, "llm_container_name": None,
    }
    return Settings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]


def test_nothing_configured_or_answering_means_the_mock():
    assert configured_llm(settings()) is None


@pytest.mark.parametrize(("values", "expected"), [
    ({"use_cloud_llm": True, "cloud_chat_ui_url": "https://llm.example"}, "(cloud"),
    ({"llm_container_name": "vllm-1"}, "http://vllm-1:7000 (container vllm-1)"),
])
def test_cloud_or_a_named_container_counts_as_configured(values: dict[str, Any], expected: str):
    assert expected in (configured_llm(settings(**values)) or "")


def test_a_local_llm_answering_health_is_used(fake: Callable[[Routes], Fake]):
    llm = fake({"/health": (200, {})})
    described = configured_llm(settings(local_llm_host="127.0.0.1", local_llm_port=llm.port))
    assert described is not None and described.startswith(f"{llm.url} (local host LLM")


@pytest.mark.parametrize(("status", "body", "found"), [
    (200, {"abc123": {"name": "llama"}}, True),
    (200, {}, False),  # the backend runs but nothing is deployed
    (200, ["not", "an", "object"], False),
    (500, {"abc123": {}}, False),
])
def test_the_backend_counts_only_with_deployed_models(
    fake: Callable[[Routes], Fake], status: int, body: Any, found: bool
):
    backend = fake({"/models/deployed/": (status, body)})
    described = configured_llm(settings(agent_backend_url=backend.url))
    assert (described is not None) is found


def test_an_unresolvable_backend_is_given_up_quickly():
    started = time.monotonic()
    assert configured_llm(settings(agent_backend_url="http://tt-studio-backend-api:8000")) is None
    assert time.monotonic() - started < 4


def test_api_is_ready_only_with_a_live_worker(fake: Callable[[Routes], Fake]):
    assert api_probe(fake({"/status": (200, {"workers": 1})}).url)() is None
    assert "workers=0" in (api_probe(fake({"/status": (200, {"workers": 0})}).url)() or "")
    assert "does not answer" in (api_probe(CLOSED)() or "")


@pytest.fixture
def answering_redis() -> Iterator[str]:
    """A Redis answering on a local port: fakeredis' TCP server, in a thread of this process."""
    server = TcpFakeServer(("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    server.shutdown()
    server.server_close()


def test_an_answering_redis_is_used_as_it_is(answering_redis: str, tmp_path: Path):
    supervisor = Supervisor(out=io.StringIO())
    described = _ensure_redis(supervisor, settings(redis_url=answering_redis), data_dir=tmp_path, env={})
    assert described == f"{answering_redis} (already running)"
    assert supervisor.children == []


def test_a_remote_redis_that_does_not_answer_is_an_error(tmp_path: Path):
    supervisor = Supervisor(out=io.StringIO())
    remote = settings(redis_url="redis://:hunter2@redis.invalid:6379/0")
    with pytest.raises(StackAborted, match="not on this machine") as err:
        _ensure_redis(supervisor, remote, data_dir=tmp_path, env={})
    assert err.value.code == 1 and "hunter2" not in str(err.value)
    assert supervisor.children == []


def test_small_helpers():
    assert _redact("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert _redact("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert _log_to_stdout(["redis-server", "--logfile", "/x/redis.log"]) == [
        "redis-server", "--logfile", ""]
    assert connect_host("0.0.0.0") == "127.0.0.1" and connect_host("::1") == "[::1]"
