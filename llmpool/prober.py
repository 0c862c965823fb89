"""Health probes over HTTP: one endpoint (`probe`) or many at once (`probe_all`).

A probe is `GET {health_url}`, or `GET {base}/health` falling back to `GET {base}/v1/models` when
/health answers 404/405 (OpenAI-compatible servers without /health). HTTP 200 is a success;
`llmpool.health` turns results into states. Probes carry no auth, like the TT-Studio agent's (vLLM
keeps /health open); only a /v1/models URL gets the headers `headers_for` gives, because vLLM
started with an API key guards it. Headers are never logged.

Cloud endpoints are not probed: `probe_all` leaves them out of its answer and the caller treats
them as assumed healthy (`llmpool.health.assumed_healthy`), as the TT-Studio agent does.

Starting is not failing. A llama.cpp server loading its model answers /health with 503
{"error": {"message": "Loading model"}}, and LM Studio lists a model it has not loaded with
"state": "not-loaded" (its endpoints' health URL is that record, llmpool.discovery.openai_servers);
a TT-Studio container whose Docker health the backend lists as "starting" fails its probes while
its model warms up.
For the first two the probe reads a few KB of the body; in all three cases it reports
`starting` and the health state machine makes the endpoint "starting": not selected, not counted
as a failure.

Shortages of our own are not the endpoint's failure. A probe that finds no free connection in the
probe client's pool, or no free slot in the pass, is not made: `probe` raises NoFreeConnection and
`probe_all` leaves that endpoint out of its answer, so its health stays as it was.

Bounding a pass. Each probe runs under a wall-clock deadline (llmpool.http_deadline), so a server
that trickles its headers cannot hold it; DNS resolution is outside it, so a probe thread can
still outlive its timeout. `probe_all` therefore waits on the probes with a deadline and reports the
laggards as timeouts without waiting for their threads. Such a thread is a daemon (it never holds
up process exit) and stays registered under its endpoint until it returns: a later or overlapping
pass joins that same probe instead of starting another, so stuck threads number at most one per
endpoint however many passes run, and each ends when its blocking call gives up.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import httpx

from llmpool.endpoints import Endpoint
from llmpool.errors import NoFreeConnection
from llmpool.health import ProbeResult
from llmpool.http_deadline import call_deadline

__all__ = ["HeadersFor", "probe_url_candidates", "probe", "probe_all", "probes_in_flight", "starting_reason"]

log = logging.getLogger("llmpool.prober")

HeadersFor = Callable[[Endpoint], dict[str, str]]
MODELS_PATH = "/v1/models"
FALLBACK_STATUSES = frozenset({404, 405})  # "no /health here", not "unhealthy"
ERROR_CHARS = 200
# How long past its deadline a pass waits, so probes timing out right at it report themselves.
DEADLINE_GRACE = 0.1
# A probe waiting for a connection of our own gives up this long before its deadline, so it says
# "not probed" before the pass would count it as a timeout of the endpoint.
POOL_MARGIN = 0.3
STARTING_BODY = 4096  # bytes read of an answer that may say "starting"; the rest is not needed
LMSTUDIO_MODEL_PATH = "/api/v0/models/"


def probe_url_candidates(endpoint: Endpoint) -> list[str]:
    """The URLs a probe tries in order: the endpoint's health URL, else /health then /v1/models."""
    if endpoint.health_url:
        # TT-Studio's backend lists health URLs without a scheme.
        url = endpoint.health_url
        url = url if "://" in url else f"http://{url}"
        # LM Studio before 0.3.6 has no /api/v0: its model record 404s, its listing still answers.
        return [url, endpoint.base_url + MODELS_PATH] if endpoint.kind == "lmstudio" else [url]
    base = endpoint.base_url
    return [base + "/health", base + MODELS_PATH]


def probe(endpoint: Endpoint, *, http: httpx.Client, timeout: float,
          headers_for: HeadersFor | None = None) -> ProbeResult:
    """Probe one endpoint; `timeout` bounds the whole probe, fallback included (DNS aside).

    NoFreeConnection when `http` had no free connection in time: nothing was asked of the endpoint.
    """
    started = time.monotonic()
    result: ProbeResult | None = None
    for url in probe_url_candidates(endpoint):
        headers = headers_for(endpoint) if headers_for and _is_models_url(url) else {}
        result = _get(http, url, headers=headers, started=started, timeout=timeout)
        if result.status not in FALLBACK_STATUSES:
            break
    assert result is not None  # there is always at least one candidate
    if not result.ok and not result.starting and endpoint.container_starting:
        # Docker says the container is still starting (a TT-Studio model warms up for minutes).
        return replace(result, starting=True, error=f"container starting ({result.error})"[:ERROR_CHARS])
    return result


def _is_models_url(url: str) -> bool:
    return urlsplit(url).path.rstrip("/").endswith(MODELS_PATH)


def _get(http: httpx.Client, url: str, *, headers: dict[str, str], started: float,
         timeout: float) -> ProbeResult:
    """One GET within what is left of the probe's `timeout`, as a ProbeResult."""
    left = started + timeout - time.monotonic()
    if left <= 0:
        return _timed_out(url, started)
    limits = httpx.Timeout(left, pool=max(left - POOL_MARGIN, left / 2))
    try:
        # Streamed and never read: the status is the answer, and a dripping body cannot hold us.
        with call_deadline(left), http.stream("GET", url, headers=headers, timeout=limits) as response:
            status = response.status_code
            body = _head_of(response) if _may_say_starting(status, url) else b""
    except httpx.PoolTimeout:
        raise NoFreeConnection(f"no free connection in the probe pool for {_public(url)}") from None
    except httpx.TimeoutException:
        return _timed_out(url, started)
    except httpx.ConnectError as exc:
        return _failed(url, started, f"connect error: {exc}")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return _failed(url, started, f"{type(exc).__name__}: {exc}")
    latency = time.monotonic() - started
    if latency > timeout:  # each operation kept within its timeout, but not their sum
        return _timed_out(url, started)
    starting = starting_reason(status, body, lmstudio=LMSTUDIO_MODEL_PATH in url)
    ok = status == 200 and starting is None
    return ProbeResult(ok=ok, latency=latency, status=status, url=_public(url), starting=starting is not None,
                       error=None if ok else starting or f"HTTP {status}")


def _may_say_starting(status: int, url: str) -> bool:
    return status == 503 or (status == 200 and LMSTUDIO_MODEL_PATH in url)


def _head_of(response: httpx.Response) -> bytes:
    """At most STARTING_BODY bytes of the body (within the probe's deadline)."""
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= STARTING_BODY:
            break
    return bytes(data[:STARTING_BODY])


def starting_reason(status: int, body: bytes, *, lmstudio: bool = False) -> str | None:
    """Why an answer means "loading its model" ("loading model", "model not loaded"), or None."""
    if status == 503 and b"loading model" in body.lower():
        return "loading model"  # llama.cpp's server while it loads
    if status == 200 and lmstudio:
        try:
            state = json.loads(body).get("state")
        except (ValueError, AttributeError):
            return None  # not LM Studio's record: the 200 stands
        if isinstance(state, str) and state != "loaded":
            return f"model {state[:20]}"
    return None


def _timed_out(url: str, started: float) -> ProbeResult:
    return _failed(url, started, f"timed out after {time.monotonic() - started:.1f}s")


def _failed(url: str, started: float, error: str) -> ProbeResult:
    return ProbeResult(ok=False, latency=time.monotonic() - started, error=error[:ERROR_CHARS],
                       url=_public(url))


def _public(url: str) -> str:
    """`url` without any user:password part, fit for records and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def probe_all(endpoints: list[Endpoint], *, http: httpx.Client, timeout: float,
              max_workers: int = 32, headers_for: HeadersFor | None = None,
              ) -> dict[str, ProbeResult]:
    """Probe every non-cloud endpoint at once, by id; the pass lasts at most about `timeout`.

    With more endpoints than `max_workers` they go in waves, each bounded by `timeout`. `http`
    should allow at least `max_workers` connections.
    """
    targets = {e.id: e for e in endpoints if not e.is_cloud}
    if not targets:
        return {}
    started = time.monotonic()
    deadline = started + timeout * math.ceil(len(targets) / max_workers)
    gate = threading.BoundedSemaphore(max_workers)

    def job(endpoint: Endpoint) -> Callable[[], ProbeResult | None]:
        return lambda: _gated(endpoint, gate=gate, deadline=deadline, http=http,
                              timeout=timeout, headers_for=headers_for)

    futures = {key: _IN_FLIGHT.start(e, job(e)) for key, e in targets.items()}
    wait(futures.values(), timeout=max(0.0, deadline + DEADLINE_GRACE - time.monotonic()))
    outcomes = {key: _outcome(targets[key], future, started) for key, future in futures.items()}
    return {key: result for key, result in outcomes.items() if result is not None}


def _gated(endpoint: Endpoint, *, gate: threading.BoundedSemaphore, deadline: float,
           http: httpx.Client, timeout: float, headers_for: HeadersFor | None) -> ProbeResult | None:
    """`probe` once one of the pass's `max_workers` slots is free, within the pass deadline.

    None: not probed, for a shortage of ours (no free slot before the deadline, no free connection).
    """
    if not gate.acquire(timeout=max(0.0, deadline - POOL_MARGIN - time.monotonic())):
        log.warning("health probe of %s not made: no free probe slot in time", endpoint.id)
        return None
    try:
        left = min(timeout, deadline - time.monotonic())
        if left <= 0:
            return None
        return probe(endpoint, http=http, timeout=left, headers_for=headers_for)
    except NoFreeConnection as exc:
        log.warning("health probe of %s not made: %s", endpoint.id, exc.message)
        return None
    finally:
        gate.release()


def _outcome(endpoint: Endpoint, future: Future[ProbeResult | None], started: float) -> ProbeResult | None:
    """The probe's result (None: not made), or a timeout for one still running (left to finish)."""
    if future.done():
        return future.result()  # a bug in a probe thread is raised here, not hidden
    log.info("health probe of %s still running after %.1fs: counted as a timeout",
             endpoint.id, time.monotonic() - started)
    return _timed_out(probe_url_candidates(endpoint)[0], started)


class _InFlight:
    """Probes whose threads are still running, one per endpoint, shared by overlapping passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, ...], Future[ProbeResult | None]] = {}

    def start(self, endpoint: Endpoint, job: Callable[[], ProbeResult | None]) -> Future[ProbeResult | None]:
        """Run `job` in a daemon thread, or join the probe of `endpoint` already running."""
        # Keyed by the URLs too, so an endpoint that moved is probed at its new address.
        key = (endpoint.id, *probe_url_candidates(endpoint))
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                return running
            future: Future[ProbeResult | None] = Future()
            self._running[key] = future
        thread = threading.Thread(target=self._run, args=(key, future, job), daemon=True,
                                  name=f"llmpool-probe-{endpoint.id}"[:64])
        thread.start()
        return future

    def running(self) -> int:
        """How many probe threads are alive right now."""
        with self._lock:
            return len(self._running)

    def _run(self, key: tuple[str, ...], future: Future[ProbeResult | None],
             job: Callable[[], ProbeResult | None]) -> None:
        try:
            result = job()
        except BaseException as exc:  # handed to whoever waits on the future
            self._forget(key)
            future.set_exception(exc)
        else:
            self._forget(key)  # before the result, so no pass joins a probe that has ended
            future.set_result(result)

    def _forget(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._running.pop(key, None)


_IN_FLIGHT = _InFlight()


def probes_in_flight() -> int:
    """How many probe threads are still running (stuck ones included), for tests and /status."""
    return _IN_FLIGHT.running()
