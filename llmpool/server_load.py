"""The servers' own load: read from vLLM's /metrics and llama.cpp's /slots, kept in Redis briefly.

A server shared with other clients knows its load better than our leases do: vLLM exports
`vllm:num_requests_running`, `vllm:num_requests_waiting` and its KV-cache use
(`vllm:gpu_cache_usage_perc`, `vllm:kv_cache_usage_perc` in newer versions); llama.cpp's /slots
lists its slots with `is_processing` (older builds: `state` 1). The load pass (beat, every
AGENT_LOAD_INTERVAL seconds) reads each such server once, however many endpoints it serves, and
stores each endpoint's figure with a TTL of a few intervals, so a figure nobody refreshes
disappears and routing falls back to our own in-flight count.

Routing (llmpool.groups) reads, in one round trip, each group member's live leases and stored
figure (`MemberLoad`) and orders the group by `MemberLoad.sort_key`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import redis

from llmpool.codec import as_text
from llmpool.endpoints import Endpoint
from llmpool.http_deadline import call_deadline
from llmpool.keys import Keys
from llmpool.scripts import register
from llmpool.server_kinds import LOAD_KINDS

__all__ = [
    "ServerLoad", "MemberLoad", "LOAD_PATHS", "parse_vllm_metrics", "parse_llamacpp_slots", "read_load",
    "read_loads", "LoadStore", "load_ttl", "progressed",
]

log = logging.getLogger("llmpool.server_load")

LOAD_PATHS = {"vllm": "/metrics", "tt-studio": "/metrics", "llamacpp": "/slots"}
MAX_LOAD_BODY = 512 * 1024  # a /metrics page is tens of KB; read no more than this
FULL_CACHE = 0.95  # a KV cache this full makes new requests wait (or preempt running ones)
TTL_INTERVALS = 3  # a figure outlives this many missed load passes, then it is gone
MIN_TTL = 5.0  # seconds
STRAGGLER_GRACE = 0.5  # seconds the pass waits past its reads' deadlines
_RUNNING = ("vllm:num_requests_running",)
_WAITING = ("vllm:num_requests_waiting",)
_CACHE = ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc")
_GENERATED = "vllm:generation_tokens_total"


@dataclass(frozen=True)
class ServerLoad:
    """What a server said of its load: every client's requests, not only ours."""

    running: int
    waiting: int = 0
    cache_use: float | None = None  # fraction of the KV cache in use (vLLM)
    slots: int | None = None  # parallel slots (llama.cpp)
    generated: float | None = None  # tokens generated since the server started (vLLM's counter)

    @property
    def overloaded(self) -> bool:
        """New requests would wait: a queue, a full KV cache, or every slot busy."""
        full_slots = self.slots is not None and self.running >= self.slots
        return self.waiting > 0 or full_slots or (self.cache_use or 0.0) >= FULL_CACHE

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> ServerLoad | None:
        """A stored figure, or None when it is not one (a foreign or damaged value)."""
        try:
            data = json.loads(raw)
            cache = data.get("cache_use")
            slots = data.get("slots")
            generated = data.get("generated")
            return cls(running=max(0, int(data["running"])), waiting=max(0, int(data.get("waiting", 0))),
                       cache_use=None if cache is None else float(cache),
                       slots=None if slots is None else int(slots),
                       generated=None if generated is None else float(generated))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


@dataclass(frozen=True)
class MemberLoad:
    """One group member's load: our live leases on it and the server's own figure, if fresh."""

    in_flight: int = 0
    server: ServerLoad | None = None

    @property
    def overloaded(self) -> bool:
        if self.server is None:
            return False
        slots = self.server.slots
        return self.server.overloaded or (slots is not None and self.in_flight >= slots)

    def sort_key(self) -> tuple[int, int, int, float]:
        """Lower goes first: not overloaded, a shorter queue, fewer running, a less full cache.

        The server's running count includes our calls, but it is a few seconds old; our leases are
        current, so the larger of the two counts.
        """
        server = self.server
        if server is None:
            return (0, 0, self.in_flight, 0.0)
        return (int(self.overloaded), server.waiting, max(server.running, self.in_flight), server.cache_use or 0.0)


# -- reading a server --------------------------------------------------------------------------

def parse_vllm_metrics(text: str) -> ServerLoad | None:
    """vLLM's load from its Prometheus text (summed over label sets), or None without the gauges."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name, value = _sample(line)
        if name is None or value is None:
            continue
        if name in _CACHE:
            sums["cache"] = max(sums.get("cache", 0.0), value)
        elif name in _RUNNING or name in _WAITING or name == _GENERATED:
            sums[name] = sums.get(name, 0.0) + value
    if _RUNNING[0] not in sums:
        return None
    cache = sums.get("cache")
    return ServerLoad(running=int(sums[_RUNNING[0]]), waiting=int(sums.get(_WAITING[0], 0.0)),
                      cache_use=None if cache is None else min(1.0, cache), generated=sums.get(_GENERATED))


def _sample(line: str) -> tuple[str | None, float | None]:
    """The metric name and value of one sample line (`name{labels} value [timestamp]`)."""
    name, _, rest = line.partition("{")
    if rest:
        _labels, _, rest = rest.rpartition("}")
    else:
        name, _, rest = line.partition(" ")
    parts = rest.split()
    if not parts:
        return None, None
    try:
        value = float(parts[0])
    except ValueError:
        return None, None
    return name.strip(), value if math.isfinite(value) and value >= 0 else None


def parse_llamacpp_slots(data: Any) -> ServerLoad | None:
    """llama.cpp's load from /slots (a list of slots), or None when it is not one."""
    if not isinstance(data, list) or not data or not all(isinstance(s, dict) for s in data):
        return None
    busy = sum(1 for s in data if s.get("is_processing") is True or s.get("state") == 1)
    return ServerLoad(running=busy, slots=len(data))


def read_load(http: httpx.Client, endpoint: Endpoint, *, timeout: float) -> ServerLoad | None:
    """GET the endpoint's load page and parse it; None when it has none or could not be read."""
    path = LOAD_PATHS.get(endpoint.kind)
    if path is None:
        return None
    url = endpoint.base_url + path
    try:
        with call_deadline(timeout), http.stream("GET", url, timeout=timeout) as response:
            if response.status_code != 200:
                return None
            body = _bounded(response)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        log.debug("load of %s not read: %s", endpoint.id, type(exc).__name__)
        return None
    if path == "/metrics":
        return parse_vllm_metrics(body.decode("utf-8", errors="replace"))
    try:
        return parse_llamacpp_slots(json.loads(body))
    except ValueError:
        return None


def _bounded(response: httpx.Response) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > MAX_LOAD_BODY:
            break  # the gauges come first in vLLM's page; a cut line just fails to parse
    return bytes(data[:MAX_LOAD_BODY])


def read_loads(http: httpx.Client, endpoints: Iterable[Endpoint], *, timeout: float,
               max_workers: int = 16) -> dict[str, ServerLoad]:
    """The load of every endpoint whose kind reports one, each server read once, all at once."""
    by_server: dict[tuple[str, str], list[Endpoint]] = {}
    for endpoint in endpoints:
        if endpoint.kind in LOAD_KINDS and not endpoint.is_cloud:
            by_server.setdefault((endpoint.base_url, endpoint.kind), []).append(endpoint)
    if not by_server:
        return {}
    # Each read is cut at its deadline, but DNS resolution escapes it: the pass waits a bounded
    # time for the reads and leaves a straggler's thread to end on its own (its figure is skipped).
    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(by_server)), thread_name_prefix="load")
    try:
        futures = {server: pool.submit(read_load, http, group[0], timeout=timeout)
                   for server, group in by_server.items()}
        waves = math.ceil(len(by_server) / max_workers)
        wait(futures.values(), timeout=timeout * waves + STRAGGLER_GRACE)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    found = {server: f.result() for server, f in futures.items() if f.done() and not f.cancelled()}
    return {e.id: load for server, load in found.items() if load is not None for e in by_server[server]}


# -- keeping it in Redis -----------------------------------------------------------------------

def progressed(before: dict[str, ServerLoad], now: dict[str, ServerLoad]) -> list[str]:
    """Endpoints whose server generated tokens since the last figure: seen working, so a deep
    queue that delays our first tokens is not taken for a hang (Admitter.note_progress). A gauge
    of running requests would not do: a hung engine keeps its last value."""
    return [e for e, load in now.items()
            if load.generated is not None and e in before and before[e].generated is not None
            and load.generated > before[e].generated]  # type: ignore[operator]


def load_ttl(interval: float) -> float:
    """How long a figure lives: a few load passes, so one late pass does not drop it."""
    return max(MIN_TTL, TTL_INTERVALS * interval)


class LoadStore:
    """Writes the load pass's figures and reads members' loads (leases and figures) in one trip."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._read = register(client, "member_load")

    def write(self, loads: dict[str, ServerLoad], *, ttl: float) -> None:
        if not loads:
            return
        pipe = self.redis.pipeline(transaction=False)
        for endpoint_id, load in loads.items():
            pipe.set(self.keys.server_load(endpoint_id), load.to_json(), px=max(1, round(ttl * 1000)))
        pipe.execute()

    def figures(self, endpoint_ids: list[str]) -> dict[str, ServerLoad]:
        """The stored figures alone (one MGET), for the load pass to compare with its new ones."""
        if not endpoint_ids:
            return {}
        return self.decode_figures(endpoint_ids, self.redis.mget([self.keys.server_load(e) for e in endpoint_ids]))

    def ask_figures(self, pipe: redis.client.Pipeline, endpoint_ids: list[str]) -> None:
        """Queue the figures' read on `pipe` (one MGET, for /status's own round trip); decode the
        reply with `decode_figures`. Nothing is queued without endpoints."""
        if endpoint_ids:
            pipe.mget([self.keys.server_load(e) for e in endpoint_ids])

    @staticmethod
    def decode_figures(endpoint_ids: list[str], raws: list[Any]) -> dict[str, ServerLoad]:
        found = {e: ServerLoad.from_json(raw) for e, raw in zip(endpoint_ids, raws, strict=True) if raw}
        return {e: load for e, load in found.items() if load is not None}

    def read(self, endpoint_ids: list[str]) -> dict[str, MemberLoad]:
        """Each endpoint's live leases and fresh server figure, in one round trip."""
        if not endpoint_ids:
            return {}
        keys = [key for e in endpoint_ids for key in (self.keys.leases(e), self.keys.server_load(e))]
        reply = self._read(keys=keys)
        loads = {}
        for n, endpoint_id in enumerate(endpoint_ids):
            count, raw = reply[2 * n], reply[2 * n + 1]
            server = ServerLoad.from_json(as_text(raw)) if raw else None
            loads[endpoint_id] = MemberLoad(in_flight=int(count), server=server)
        return loads


MemberLoads = Callable[[list[str]], dict[str, MemberLoad]]
