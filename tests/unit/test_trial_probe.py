"""Half-open trials made by probes (llmpool.trial_probe through llmpool.gate.RedisGate), not by jobs.

Real HTTP against raw-socket servers in threads (tests/unit/raw_server.py), a real LLMClient, the
breaker in fakeredis on a frozen clock (open waits pass when the test sleeps the clock).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from llmpool.admission import PROBE_SUFFIX, Admitter
from llmpool.endpoints import Endpoint
from llmpool.errors import BadRequest, EndpointStarting, EndpointUnreachable, FirstTokenTimeout, ServerError
from llmpool.gate import RedisGate
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.llm_client import LLMClient, make_http_client
from llmpool.runner import run_chat
from llmpool.schemas import parse_job
from llmpool.settings import Settings, load_settings
from llmpool.trial_probe import ProbeOutcome, TrialProbes, probe_outcome
from tests.conftest import FrozenClock

KEYS = Keys("t")
OPEN_WAIT = 0.5
PROBE_WAIT = 0.4  # AGENT_FIRST_TOKEN_TIMEOUT here: a cold endpoint's probe waits this long
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
JOB = parse_job({"messages": [{"role": "user", "content": "a question"}]})


def answers(seen: list[str]) -> Callable[[socket.socket, threading.Event], None]:
    """An endpoint that answers at once; `seen` gets one entry per request."""
    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        seen.append("call")
        body = {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "length"}]}
        conn.sendall(SSE_HEAD + f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n".encode())
    return behaviour


def hangs(seen: list[str]) -> Callable[[socket.socket, threading.Event], None]:
    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        seen.append("call")
        stop.wait(10)
    return behaviour


def refusing_url() -> str:
    """A port nothing listens on: connections to it are refused."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def endpoint(url: str, name: str = "primary") -> Endpoint:
    return Endpoint(id=name, chat_url=url.rstrip("/") + "/v1/chat/completions", model="m", model_name="m",
                    source="local")


class RecordingProbes(TrialProbes):
    """TrialProbes that keeps its threads, so a test can wait for a probe to settle."""

    def __init__(self, client: LLMClient, *, ceiling: float) -> None:
        super().__init__(client, ceiling=ceiling)
        self.threads: list[threading.Thread] = []

    def start(self, *args: Any, **kwargs: Any) -> threading.Thread:
        thread = super().start(*args, **kwargs)
        self.threads.append(thread)
        return thread

    def wait(self) -> None:
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive(), "a probe outlived its timeout"


@pytest.fixture
def settings() -> Settings:
    return load_settings(agent_max_failures=3, agent_breaker_open_wait=OPEN_WAIT, agent_breaker_open_wait_max=30,
                         agent_first_token_timeout=PROBE_WAIT, agent_request_timeout=5, agent_connect_timeout=1)


@pytest.fixture
def llm(settings: Settings) -> Iterator[LLMClient]:
    with make_http_client(settings, max_connections=4) as http:
        yield LLMClient(http, settings)


@pytest.fixture
def probes(llm: LLMClient) -> RecordingProbes:
    return RecordingProbes(llm, ceiling=PROBE_WAIT)


@pytest.fixture
def gate(any_redis: redis.Redis, settings: Settings, probes: RecordingProbes) -> RedisGate:
    return RedisGate(Admitter(any_redis, KEYS), settings, probes=probes)


def open_breaker(gate: RedisGate, target: Endpoint, clock: FrozenClock) -> None:
    """A refused connection opened it (outcome "down": one call is enough); then its wait passes."""
    ticket = gate.admit(target, "opener", tokens=10, budget=5)
    assert ticket.allowed
    gate.settle(target, "opener", ticket, outcome="down", reserved=10, used=None, duration=0.01)
    assert breaker(gate, target)["state"] == "open"
    clock.sleep(OPEN_WAIT)
    gate._open_until.clear()  # the gate's own memory of the wait runs on the real clock: Redis decides


def breaker(gate: RedisGate, target: Endpoint) -> dict[str, Any]:
    return gate.admitter.stats([target.id])[target.id]


def test_the_trial_goes_to_a_probe_and_the_job_moves_on_without_a_call(gate: RedisGate, probes: RecordingProbes,
                                                                       llm: LLMClient, serve, clock: FrozenClock,
                                                                       any_redis: redis.Redis) -> None:
    primary_seen: list[str] = []
    backup_seen: list[str] = []
    primary = endpoint(serve(answers(primary_seen)).url)
    backup = endpoint(serve(answers(backup_seen)).url, "backup")
    open_breaker(gate, primary, clock)
    publisher = JobStore(any_redis, KEYS, ttl=60, stream_ttl=60).publisher("j", stream_tokens=False)
    result, report = run_chat(JOB, job_id="j", candidates=[primary, backup], client=llm, publisher=publisher,
                              deadline=time.time() + 30, max_calls=3, gate=gate)
    assert (result.endpoint, result.attempts, report.calls) == ("backup", 1, 1)  # the trial cost the job no call
    assert report.refusals == [{"endpoint": "primary", "reason": "probing", "retry_after": pytest.approx(0.25)}]
    probes.wait()
    assert primary_seen == ["call"]  # the probe, and nothing else: the job's own request went to the backup
    stats = breaker(gate, primary)
    assert (stats["state"], stats["failed_trials"], stats["in_flight"], stats["trial_in_flight"]) == \
        ("closed", 0, 0, False)
    assert gate.admit(primary, "next", tokens=10, budget=5).allowed  # closed: traffic is back at once


@pytest.mark.parametrize("fault", ["refuse", "hang"])
def test_a_failed_probe_reopens_for_twice_as_long_each_time(gate: RedisGate, probes: RecordingProbes, serve,
                                                            clock: FrozenClock, fault: str) -> None:
    seen: list[str] = []
    primary = endpoint(refusing_url() if fault == "refuse" else serve(hangs(seen)).url)
    open_breaker(gate, primary, clock)
    waits = []
    for trial in range(1, 3):
        refused = gate.admit(primary, f"job{trial}", tokens=10, budget=5, fallback=True)
        assert (refused.allowed, refused.reason) == (False, "probing")
        # this process skips it: while the probe runs ("probing"), and once it failed ("open")
        assert gate.admit(primary, "another", tokens=10, budget=5).reason in ("probing", "open")
        probes.wait()
        stats = breaker(gate, primary)
        assert (stats["state"], stats["failed_trials"], stats["in_flight"]) == ("open", trial, 0)
        waits.append(stats["open_wait"])
        clock.sleep(stats["open_wait"])
        gate._open_until.clear()  # as another process would see it: Redis decides
    assert waits == [2 * OPEN_WAIT, 4 * OPEN_WAIT]
    assert len(seen) == (2 if fault == "hang" else 0)  # a hung endpoint saw the two probes, no job


def test_the_probe_holds_the_trial_not_the_job(gate: RedisGate, probes: RecordingProbes, serve, clock: FrozenClock,
                                               any_redis: redis.Redis) -> None:
    primary = endpoint(serve(hangs([])).url)
    open_breaker(gate, primary, clock)
    assert gate.admit(primary, "winner", tokens=10, budget=5).reason == "probing"
    assert any_redis.get(KEYS.breaker_trial(primary.id)) == b"winner" + PROBE_SUFFIX.encode()
    gate._open_until.clear()  # as the job would find it from another worker process
    again = gate.admit(primary, "winner", tokens=10, budget=5)
    assert (again.allowed, again.reason) == (False, "trial_busy")  # the job holds nothing: no second probe
    probes.wait()
    assert len(probes.threads) == 1
    assert breaker(gate, primary)["failed_trials"] == 1


def test_a_probe_waits_the_trials_first_token_timeout_else_the_ceiling(llm: LLMClient) -> None:
    probes = TrialProbes(llm, ceiling=10.0)
    assert probes.timeout(None) == 10.0  # cold: the ceiling
    assert probes.timeout(3.0) == 3.0  # warm: the trial's own (it doubles with each failed trial, llmpool.ttft)
    assert probes.timeout(40.0) == 10.0


@pytest.mark.parametrize(("error", "outcome"), [
    (None, "success"),
    (BadRequest("400 to the probe", status=400), "success"),  # it answered: it is up
    (EndpointUnreachable("refused", refused=True), "down"),
    (EndpointUnreachable("no route"), "failure"),
    (ServerError("503", status=503), "failure"),
    (FirstTokenTimeout("silent"), "failure"),
    (EndpointStarting("loading"), "neutral"),
    (RuntimeError("a bug of ours"), "neutral"),
])
def test_a_probes_error_is_the_breakers_outcome(error: BaseException | None, outcome: ProbeOutcome) -> None:
    assert probe_outcome(error) == outcome
