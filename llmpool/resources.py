"""The clients one worker process uses: made in a lifecycle hook, never at import.

The threads pool runs every task in the main process (only `worker_init` fires there); prefork
children get `worker_process_init` after the fork and must not reuse the parent's sockets.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx
import redis

from llmpool.admission import Admitter
from llmpool.conversations import ConversationStore
from llmpool.endpoints import Endpoint
from llmpool.errors import ModelNotFound
from llmpool.gate import RedisGate
from llmpool.groups import order_candidates
from llmpool.heartbeats import WorkerHeartbeats
from llmpool.hedge_pool import HedgePool, hedge_threads
from llmpool.hedging import Hedging
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.leases import LeaseKeeper
from llmpool.llm_client import LLMClient, make_http_client, make_probe_client
from llmpool.metrics import MetricsRecorder, MetricsStore
from llmpool.model_choice import candidates_for, require_model
from llmpool.redis_conn import redis_client
from llmpool.registry import Registry
from llmpool.runner import Gate
from llmpool.schemas import ChatJob
from llmpool.selection import Selection
from llmpool.server_load import LoadStore, MemberLoad, MemberLoads
from llmpool.settings import Settings, get_settings
from llmpool.share import FleetSlots
from llmpool.trial_probe import TrialProbes

__all__ = ["Resources", "chat_connections", "redis_connections", "SelectionCache", "open_resources", "current",
           "close_resources", "forget_after_fork", "reload_resources", "peek"]


def _no_load(endpoint_ids: list[str]) -> dict[str, MemberLoad]:
    return {}


RedisClient = redis.Redis  # the `redis` field of Resources hides the module inside its body


@dataclass
class Resources:
    settings: Settings
    keys: Keys
    redis: redis.Redis
    http: httpx.Client  # chat calls only
    probe_http: httpx.Client  # health probes and discovery: a saturated chat pool never starves them
    llm: LLMClient
    jobs: JobStore
    conversations: ConversationStore
    registry: Registry
    selection_cache: SelectionCache
    leases: LeaseKeeper
    metrics: MetricsRecorder  # one pipelined write per job run or sweep pass
    gate: Gate | None = None
    load: MemberLoads = _no_load  # each group member's leases and server figure (llmpool.server_load)
    hedging: Hedging | None = None  # None: AGENT_HEDGE_ENABLED is off
    lease_redis: RedisClient | None = None  # gevent: the lease keeper's own connections (see _lease_redis)

    def candidates(self, selection: Selection, job: ChatJob) -> list[Endpoint]:
        """The selection's endpoints serving the job's model, in the order it tries them (groups, stickiness, pin)."""
        allowed = candidates_for(selection.order, job.model, aliases=self.settings.agent_model_aliases,
                                 fallbacks=self.settings.agent_model_fallbacks)
        return order_candidates(allowed, settings=self.settings,
                                thread_id=job.thread_id, pinned=selection.pinned, load=self.load)

    def model_vanished(self, job: ChatJob) -> bool:
        """True when the job names a model that no known endpoint serves, healthy or not."""
        try:
            require_model(job.model, self.registry.snapshot().endpoints, self.settings.agent_model_aliases)
        except ModelNotFound:
            return True
        return False

    def close(self) -> None:
        self.leases.stop()
        if self.hedging is not None:
            self.hedging.pool.close()
        self.http.close()
        self.probe_http.close()
        self.redis.close()
        if self.lease_redis is not None:
            self.lease_redis.close()


class SelectionCache:
    """The selection as this process last read it, re-read at most every `ttl` seconds.

    One Redis read per second per process, however many jobs run; a job may act on a selection
    up to a second old, which the in-job failover covers.
    """

    def __init__(self, registry: Registry, ttl: float = 1.0) -> None:
        self.registry = registry
        self.ttl = ttl
        self._value: Selection | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def get(self) -> Selection | None:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl:
                self._value = self.registry.selection()
                self._read_at = time.monotonic()
            return self._value

    def invalidate(self) -> None:
        with self._lock:
            self._read_at = float("-inf")


_lock = threading.Lock()
_current: Resources | None = None
WORKER_CLIENT_NAME = "llmpool-worker"
GEVENT_REDIS_CONNECTIONS = 256
LEASE_CONNECTIONS = 2  # the lease keeper's: renewals and the cancel look, one greenlet
# A greenlet waits this long for a free Redis connection, then fails as if Redis were away.
REDIS_POOL_WAIT = 10.0


def _hedges(settings: Settings) -> int:
    return hedge_threads(settings.agent_worker_concurrency) if settings.agent_hedge_enabled else 0


def chat_connections(settings: Settings) -> int:
    """Connections of a worker process's chat HTTP pool: one per thread (at least 10), plus one per
    hedge thread, which calls beside the worker's own threads."""
    return max(settings.agent_worker_concurrency, 10) + _hedges(settings)


def redis_connections(settings: Settings) -> int:
    """Redis connections of a worker process: one per thread (its pool never runs short), or with
    gevent a capped, blocking pool: a greenlet holds one only for a round trip, and 10,000 of them
    would spend 10,000 sockets on Redis beside their 10,000 to the LLMs."""
    per_slot = settings.agent_worker_concurrency + _hedges(settings) + 8
    if settings.agent_worker_pool != "gevent":
        return per_slot
    return min(per_slot, settings.agent_redis_max_connections or GEVENT_REDIS_CONNECTIONS + 8)


def _build(settings: Settings) -> Resources:
    keys = Keys(settings.agent_redis_prefix)
    # Hedge threads call (HTTP) and admit and settle (Redis) beside the worker's own threads.
    hedges = _hedges(settings)
    client = redis_client(
        settings, max_connections=redis_connections(settings),
        pool_wait=REDIS_POOL_WAIT if settings.agent_worker_pool == "gevent" else None,
        health_check_interval=30, socket_connect_timeout=5, socket_timeout=10,
        client_name=WORKER_CLIENT_NAME,  # CLIENT LIST tells our connections from the broker's
    )
    http = make_http_client(settings, max_connections=chat_connections(settings))
    registry = Registry(client, keys)
    admitter = Admitter(client, keys)
    jobs = JobStore(client, keys, ttl=settings.agent_result_ttl, stream_ttl=settings.agent_stream_ttl)
    lease_redis = _lease_redis(settings)
    leases = LeaseKeeper(jobs, lease=settings.agent_job_lease, admitter=admitter) if lease_redis is None else \
        LeaseKeeper(JobStore(lease_redis, keys, ttl=settings.agent_result_ttl, stream_ttl=settings.agent_stream_ttl),
                    lease=settings.agent_job_lease, admitter=Admitter(lease_redis, keys))
    selection_cache = SelectionCache(registry)
    # The concurrency share applies while the jobs have another endpoint to go to (llmpool.share).
    fleet_slots = FleetSlots(WorkerHeartbeats(client, keys), others=lambda: _choices(selection_cache) > 1)
    llm = LLMClient(http, settings)
    # Half-open trials are probes through the same client, not users' calls (llmpool.trial_probe).
    probes = TrialProbes(llm, ceiling=settings.agent_first_token_timeout)
    return Resources(
        settings=settings, keys=keys, redis=client, http=http, probe_http=make_probe_client(settings),
        llm=llm,
        jobs=jobs, leases=leases,
        conversations=ConversationStore(
            client, keys, max_messages=settings.agent_conversation_max_messages,
            ttl=settings.agent_conversation_ttl),
        registry=registry, selection_cache=selection_cache,
        metrics=MetricsRecorder(MetricsStore(client, keys)),
        gate=RedisGate(admitter, settings, leases=leases, fleet_slots=fleet_slots, probes=probes),
        load=LoadStore(client, keys).read,
        hedging=Hedging.from_settings(settings, HedgePool(hedges)) if hedges else None, lease_redis=lease_redis,
    )


def _lease_redis(settings: Settings) -> redis.Redis | None:
    """With gevent, the lease keeper renews through connections of its own: when thousands of calls
    end together their writes queue for the shared pool for seconds, and renewals stuck in that queue
    let leases lapse (the sweep then hands live jobs to other workers). Threads never queue."""
    if settings.agent_worker_pool != "gevent":
        return None
    return redis_client(settings, max_connections=LEASE_CONNECTIONS, pool_wait=REDIS_POOL_WAIT,
                        client_name=WORKER_CLIENT_NAME, health_check_interval=30, socket_connect_timeout=5,
                        socket_timeout=10)


def _choices(cache: SelectionCache) -> int:
    selection = cache.get()
    return len(selection.order) if selection else 0


def open_resources(settings: Settings | None = None) -> Resources:
    """Create this process's clients once; later calls return the same ones."""
    global _current
    with _lock:
        if _current is None:
            _current = _build(settings or get_settings())
        return _current


def peek() -> Resources | None:
    """This process's clients if they were opened, without opening them."""
    return _current


def current() -> Resources:
    """This process's clients (opened on first use if no hook ran, e.g. an eager call)."""
    return _current or open_resources()


def reload_resources(settings: Settings) -> Resources:
    """Swap in clients built from new settings; the old ones close once running calls are done.

    Jobs in flight keep the Resources they started with, so closing at once would cut them.
    """
    global _current
    fresh = _build(settings)
    with _lock:
        old, _current = _current, fresh
    if old is not None:
        timer = threading.Timer(old.settings.agent_request_timeout + 5, old.close)
        timer.daemon = True
        timer.start()
    return fresh


def close_resources() -> None:
    global _current
    with _lock:
        resources, _current = _current, None
    if resources is not None:
        resources.close()


def forget_after_fork() -> None:
    """Drop the parent's clients in a forked child without closing the parent's sockets."""
    global _current
    _current = None
