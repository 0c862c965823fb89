"""What every route needs, opened once in the app's lifespan and reached through the request."""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from anyio import to_thread
from celery import Celery
from fastapi import Request

from api.stream_hub import StreamHub
from llmpool.admission import Admitter
from llmpool.client import Client, producer_config
from llmpool.input_limits import InputLimits
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.llm_client import LLMClient, make_http_client
from llmpool.metrics.collector import PoolCollector
from llmpool.redis_conn import async_redis_client, celery_transport_options, redis_client
from llmpool.registry import Registry
from llmpool.settings import Settings
from llmpool.ttft import ttft_config

__all__ = ["ApiState", "RedisBudget", "open_state", "redis_clients", "get_state", "control_app", "API_CLIENT_NAME",
           "PRODUCER_CONNECTIONS"]

API_CLIENT_NAME = "llmpool-api"  # CLIENT LIST tells the API's connections apart by it
# Broker connections the API publishes chats through (Celery's broker_pool_limit, default 10); a
# publish takes a millisecond, so a few serve every thread. kombu opens two Redis connections for
# each (publishing and the task-sent event), so they add 2 x this to AGENT_API_REDIS_CONNECTIONS.
PRODUCER_CONNECTIONS = 4


@dataclass(frozen=True)
class RedisBudget:
    """How the API splits AGENT_API_REDIS_CONNECTIONS between its two clients.

    The asyncio client serves the stream hub (one reader, its wakes); the sync one serves the
    threadpool, which gets exactly as many threads, so a thread never lacks a connection. A pool
    that is out of connections anyway refuses at once (redis-py's MaxConnectionsError): the
    request gets 503 `overloaded`.
    """

    total: int

    @property
    def hub(self) -> int:
        return max(2, self.total // 8)

    @property
    def threads(self) -> int:
        return self.total - self.hub


@dataclass
class ApiState:
    settings: Settings
    keys: Keys
    redis: redis.Redis
    aredis: aioredis.Redis
    jobs: JobStore
    client: Client
    celery: Celery
    registry: Registry
    llm: LLMClient
    admitter: Admitter
    hub: StreamHub
    budget: RedisBudget
    metrics: PoolCollector

    def start(self) -> None:
        """Inside the running loop: the threadpool gets one thread per sync connection; the hub reads."""
        to_thread.current_default_thread_limiter().total_tokens = self.budget.threads
        self.hub.start()

    async def close(self) -> None:
        await self.hub.close()
        await self.aredis.aclose()
        self.redis.close()
        self.client.close()
        self.celery.close()
        self.llm.http.close()


def control_app(settings: Settings) -> Celery:
    """A producer-only Celery app for control tasks and broadcasts, with results (POST /refresh
    waits for one); it imports no worker code."""
    app = Celery("llmpool-api", set_as_current=False)
    app.conf.update({**producer_config(settings), "result_backend": settings.redis_url,
                     "result_backend_transport_options": celery_transport_options(settings)})
    return app


def redis_clients(settings: Settings, budget: RedisBudget) -> tuple[redis.Redis, aioredis.Redis]:
    """The API's sync and asyncio Redis clients, with bounded pools (Sentinel-aware, via redis_conn)."""
    common = {"socket_connect_timeout": 5, "health_check_interval": 30, "client_name": API_CLIENT_NAME}
    sync = redis_client(settings, max_connections=budget.threads, socket_timeout=10, **common)
    # The hub's XREAD blocks for up to READ_BLOCK_MS; the socket timeout must outlast it.
    aredis = async_redis_client(settings, max_connections=budget.hub, socket_timeout=30, **common)
    return sync, aredis


def open_state(settings: Settings) -> ApiState:
    """Every client the routes use; call `start()` once the event loop runs."""
    keys = Keys(settings.agent_redis_prefix)
    budget = RedisBudget(settings.agent_api_redis_connections)
    sync, aredis = redis_clients(settings, budget)
    jobs = JobStore(sync, keys, ttl=settings.agent_result_ttl, stream_ttl=settings.agent_stream_ttl)
    llm = LLMClient(make_http_client(settings, max_connections=20), settings)
    hub = StreamHub(aredis, keys, max_waiters=settings.agent_api_max_waiters)
    client = Client(settings=settings, connection=sync, limits=InputLimits.from_settings(settings))
    client.celery.conf.broker_pool_limit = PRODUCER_CONNECTIONS  # read at the first publish
    return ApiState(settings=settings, keys=keys, redis=sync, aredis=aredis, jobs=jobs,
                    client=client, celery=control_app(settings),
                    registry=Registry(sync, keys), llm=llm, admitter=Admitter(sync, keys), hub=hub,
                    budget=budget,
                    metrics=PoolCollector(sync, keys, checks_enabled=settings.agent_health_check_enabled,
                                          ttft=ttft_config(settings)))


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.llmpool
    return state
