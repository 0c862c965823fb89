"""Health probes over real HTTP against mock containers: every outcome, the fallback, the bound."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn

from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import free_port
from llmpool.endpoints import Endpoint
from llmpool.health import Health, next_health, probe_state
from llmpool.prober import probe, probe_all, probe_url_candidates, probes_in_flight

pytestmark = pytest.mark.timeout(60)

TOKEN = "eyJhbGciOiJIUzI1NiJ9.probe.token"
NAMES = ("ok", "slow", "refused", "err", "hung", "secure", "ollama")


def endpoint(url: str, name: str, *, health_url: str | None = None,
             source: str = "discovered") -> Endpoint:
    return Endpoint(id=name, chat_url=url + "/v1/chat/completions", model="m", model_name=name,
                    source=source, health_url=health_url)  # type: ignore[arg-type]


def bearer(_: Endpoint) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockLLM]:
    specs = [ContainerSpec(name=n, token=TOKEN if n == "secure" else None,
                           flavor="ollama" if n == "ollama" else "openai") for n in NAMES]
    with MockLLM(specs, backend=False) as running:
        yield running


@pytest.fixture
def fleet(mock: MockLLM) -> Iterator[dict[str, Endpoint]]:
    """The module's containers as endpoints, faults cleared before and after each test."""
    for name in NAMES:
        mock.configure(name, fault="none")
        mock.reset(name)
    yield {name: endpoint(mock.url(name), name) for name in NAMES}
    for name in NAMES:
        mock.configure(name, fault="none")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(limits=httpx.Limits(max_connections=64)) as client:
        yield client


def paths(mock: MockLLM, name: str) -> list[str]:
    return [r["path"] for r in mock.stats(name)["records"]]


# -- one endpoint -----------------------------------------------------------------------------

def test_healthy(fleet: dict[str, Endpoint], http: httpx.Client, mock: MockLLM) -> None:
    result = probe(fleet["ok"], http=http, timeout=2)
    assert (result.ok, result.status, result.error) == (True, 200, None)
    assert result.url == mock.url("ok") + "/health"
    assert 0 < result.latency < 1
    assert paths(mock, "ok") == ["/health"]


def test_slow_health_is_degraded_past_the_threshold(fleet: dict[str, Endpoint], http: httpx.Client,
                                                    mock: MockLLM) -> None:
    mock.configure("slow", fault="slow_health", health_delay=0.3)
    result = probe(fleet["slow"], http=http, timeout=2)
    assert result.ok and 0.3 <= result.latency < 1.5
    assert probe_state(result) == "healthy"  # under TT-Studio's 2 s
    after = next_health(Health(), result, now=1.0, max_failures=3, recovery_successes=2,
                        degraded_after=0.2)
    assert after.state == "degraded"


def test_refused_is_a_connect_error(fleet: dict[str, Endpoint], http: httpx.Client,
                                    mock: MockLLM) -> None:
    mock.configure("refused", fault="refuse")
    result = probe(fleet["refused"], http=http, timeout=2)
    assert not result.ok and result.status is None
    assert result.error is not None and result.error.startswith("connect error:")
    assert result.latency < 1


def test_error500_fails_without_fallback(fleet: dict[str, Endpoint], http: httpx.Client,
                                         mock: MockLLM) -> None:
    mock.configure("err", fault="error500")
    result = probe(fleet["err"], http=http, timeout=2)
    assert (result.ok, result.status, result.error) == (False, 500, "HTTP 500")
    assert paths(mock, "err") == ["/health"]  # a 500 is an answer: /v1/models is not tried


def test_hang_is_bounded_by_the_timeout(fleet: dict[str, Endpoint], http: httpx.Client,
                                        mock: MockLLM) -> None:
    mock.configure("hung", fault="hang")
    started = time.monotonic()
    result = probe(fleet["hung"], http=http, timeout=0.5)
    elapsed = time.monotonic() - started
    assert not result.ok and result.status is None
    assert result.error is not None and result.error.startswith("timed out after 0.5")
    assert 0.5 <= elapsed < 1.2


# -- no /health: fall back to /v1/models --------------------------------------------------------

def test_no_health_route_falls_back_to_models(fleet: dict[str, Endpoint], http: httpx.Client,
                                             mock: MockLLM) -> None:
    result = probe(fleet["ollama"], http=http, timeout=2)  # the Ollama flavour has no /health
    assert (result.ok, result.status, result.url) == (True, 200, mock.url("ollama") + "/v1/models")
    assert paths(mock, "ollama") == ["/health", "/v1/models"]


@pytest.fixture
def models_only() -> Iterator[tuple[str, list[tuple[str, bytes | None]]]]:
    """A server with /v1/models (bearer required) and no /health; yields its URL and the log."""
    seen: list[tuple[str, bytes | None]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        auth = dict(scope["headers"]).get(b"authorization")
        seen.append((scope["path"], auth))
        status = 404
        if scope["path"] == "/v1/models":
            status = 200 if auth == f"Bearer {TOKEN}".encode() else 401
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"object": "list", "data": []}'})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    thread.join(10)


def test_falls_back_to_models_with_the_bearer_there_only(
        models_only: tuple[str, list[tuple[str, bytes | None]]], http: httpx.Client,
        caplog: pytest.LogCaptureFixture) -> None:
    url, seen = models_only
    caplog.set_level(logging.DEBUG)
    result = probe(endpoint(url, "no-health"), http=http, timeout=2, headers_for=bearer)
    assert (result.ok, result.status, result.url) == (True, 200, url + "/v1/models")
    assert seen == [("/health", None), ("/v1/models", f"Bearer {TOKEN}".encode())]
    assert TOKEN not in caplog.text


def test_fallback_without_the_bearer_is_a_401(
        models_only: tuple[str, list[tuple[str, bytes | None]]], http: httpx.Client) -> None:
    url, _ = models_only
    result = probe(endpoint(url, "no-health"), http=http, timeout=2)
    assert (result.ok, result.status, result.error) == (False, 401, "HTTP 401")
    assert result.url == url + "/v1/models"


def test_health_url_is_probed_as_given(mock: MockLLM, fleet: dict[str, Endpoint],
                                       http: httpx.Client) -> None:
    # TT-Studio's backend gives health URLs without a scheme; here it names /v1/models.
    bare = mock.url("secure").removeprefix("http://") + "/v1/models"
    ep = endpoint(mock.url("secure"), "secure", health_url=bare)
    assert probe_url_candidates(ep) == ["http://" + bare]
    assert probe(ep, http=http, timeout=2, headers_for=bearer).ok
    assert mock.stats("secure")["last_authorization"] == f"Bearer {TOKEN}"
    assert probe(ep, http=http, timeout=2).status == 401


def test_url_candidates() -> None:
    ep = endpoint("http://h:1/prefix", "x")
    assert probe_url_candidates(ep) == ["http://h:1/prefix/health", "http://h:1/prefix/v1/models"]
    ep = endpoint("http://h:1", "x", health_url="http://h:2/ping")
    assert probe_url_candidates(ep) == ["http://h:2/ping"]


def test_credentials_in_a_url_stay_out_of_the_result(http: httpx.Client) -> None:
    ep = endpoint(f"http://user:secret@127.0.0.1:{free_port()}", "creds")
    result = probe(ep, http=http, timeout=1)
    assert not result.ok and result.url is not None and "secret" not in result.url


# -- many endpoints at once ---------------------------------------------------------------------

def test_probe_all_by_id_and_cloud_is_skipped(fleet: dict[str, Endpoint], mock: MockLLM,
                                              http: httpx.Client) -> None:
    mock.configure("err", fault="error500")
    cloud = endpoint("https://cloud.example", "cloud", source="cloud")
    results = probe_all([fleet["ok"], fleet["err"], cloud], http=http, timeout=2)
    assert set(results) == {"ok", "err"}
    assert results["ok"].ok and results["err"].status == 500
    assert probe_all([cloud], http=http, timeout=2) == {}


def test_twenty_endpoints_five_hanging_take_one_timeout(http: httpx.Client) -> None:
    specs = [ContainerSpec(name=f"c{i:02d}", fault="hang" if i % 4 == 0 else "none")
             for i in range(20)]
    with MockLLM(specs, backend=False) as mock:
        endpoints = [endpoint(mock.url(s.name), s.name) for s in specs]
        started = time.monotonic()
        results = probe_all(endpoints, http=http, timeout=1.0)
        elapsed = time.monotonic() - started
    print(f"\nhealth pass: 20 endpoints, 5 hanging, timeout 1 s: {elapsed:.2f} s")
    assert elapsed < 2.5  # sequentially it would be >= 5 s
    assert sorted(k for k, r in results.items() if not r.ok) == ["c00", "c04", "c08", "c12", "c16"]
    assert all((r.error or "").startswith("timed out") for r in results.values() if not r.ok)


def test_more_endpoints_than_workers_go_in_waves(fleet: dict[str, Endpoint],
                                                 http: httpx.Client) -> None:
    many = [endpoint(fleet["ok"].base_url, f"ok-{i}") for i in range(5)]
    results = probe_all(many, http=http, timeout=2, max_workers=2)
    assert len(results) == 5 and all(r.ok for r in results.values())


def test_overlapping_passes_share_one_probe(fleet: dict[str, Endpoint], mock: MockLLM,
                                            http: httpx.Client) -> None:
    mock.configure("slow", fault="slow_health", health_delay=0.5)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(probe_all, [fleet["slow"]], http=http, timeout=3)
        time.sleep(0.1)
        second = pool.submit(probe_all, [fleet["slow"]], http=http, timeout=3)
        results = [first.result(), second.result()]
    assert results[0] == results[1] and results[0]["slow"].ok
    assert paths(mock, "slow") == ["/health"]


def test_a_stuck_probe_is_reported_and_never_started_twice() -> None:
    """A probe stuck where httpx timeouts do not reach (as in DNS) holds one thread, not more."""
    release, calls = threading.Event(), []

    def stuck(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        release.wait(10)  # ignores every httpx timeout, like getaddrinfo
        return httpx.Response(200)

    ep = endpoint("http://stuck.invalid", "stuck")
    before = probes_in_flight()
    with httpx.Client(transport=httpx.MockTransport(stuck)) as client:
        for _ in range(3):
            started = time.monotonic()
            result = probe_all([ep], http=client, timeout=0.3)["stuck"]
            assert time.monotonic() - started < 1.0
            assert not result.ok and (result.error or "").startswith("timed out")
        assert calls == ["/health"] and probes_in_flight() == before + 1
        release.set()
        deadline = time.monotonic() + 5
        while probes_in_flight() > before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert probes_in_flight() == before
        assert probe_all([ep], http=client, timeout=0.3)["stuck"].ok  # a fresh probe now
    assert calls == ["/health", "/health"]
